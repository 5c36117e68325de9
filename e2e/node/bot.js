#!/usr/bin/env node
'use strict'
// A Minecraft client bot (mineflayer) for PeerHost's end-to-end tests.
//
//   node bot.js --host H --port P --username U [--wait-ready SECONDS] [--timeout SECONDS]
//               place X Y Z BLOCK [X Y Z BLOCK ...]
//   node bot.js ... check X Y Z BLOCK [X Y Z BLOCK ...]
//
// place: runs `/setblock X Y Z BLOCK` for each block (the server must let the bot use it:
//        flying-squid with everybody-op), then waits until the server shows each block.
// check: reads each block (teleporting near it with /tp if its chunk is not loaded).
//
// Both print one JSON line on stdout:
//   {"ok": true|false, "mode": "place"|"check", "blocks": [{"x":..,"y":..,"z":..,
//    "expected":"stone","actual":"stone"|null,"match":true|false}], "error": null|"..."}
// Progress and errors go to stderr.
//
// Exit codes: 0 every block is what was asked; 1 some block is not; 2 usage error (bad
// arguments, unknown block name); 3 could not connect, was kicked, or timed out.
// --wait-ready N: keep retrying the connection for up to N seconds (default 0: one try).
// --timeout N: bound on the whole run once connected (default 60).

const BLOCK_WAIT_MS = 10000

function usage (message) {
  if (message) process.stderr.write(`bot.js: ${message}\n`)
  process.stderr.write('usage: node bot.js --host H --port P --username U [--wait-ready N] [--timeout N]' +
    ' (place|check) X Y Z BLOCK [X Y Z BLOCK ...]\n')
  emit({ ok: false, mode: null, blocks: [], error: message || 'usage' }, 2)
}

let emitted = false
function emit (result, code) {
  if (!emitted) {
    emitted = true
    process.stdout.write(JSON.stringify(result) + '\n')
  }
  process.exitCode = code
  // mineflayer keeps timers around; exit once stdout is flushed
  process.stdout.write('', () => process.exit(code))
}

function log (message) {
  process.stderr.write(`[bot] ${message}\n`)
}

function parseArgs (argv) {
  const opts = { host: '127.0.0.1', port: null, username: 'PeerHostBot', waitReady: 0, timeout: 60, version: '1.21.4' }
  const names = { '--host': 'host', '--port': 'port', '--username': 'username', '--wait-ready': 'waitReady', '--timeout': 'timeout', '--version': 'version' }
  let i = 0
  for (; i < argv.length; i++) {
    let arg = argv[i]
    if (!arg.startsWith('--')) break
    let value
    const eq = arg.indexOf('=')
    if (eq > 0) {
      value = arg.slice(eq + 1)
      arg = arg.slice(0, eq)
    }
    if (arg === '--help') usage()
    const key = names[arg]
    if (!key) usage(`unknown option ${arg}`)
    if (value === undefined) {
      if (i + 1 >= argv.length) usage(`${arg} needs a value`)
      value = argv[++i]
    }
    opts[key] = value
  }
  const mode = argv[i++]
  if (mode !== 'place' && mode !== 'check') usage('the command must be place or check')
  const rest = argv.slice(i)
  if (rest.length === 0 || rest.length % 4 !== 0) usage('give blocks as X Y Z BLOCK groups')
  const blocks = []
  for (let j = 0; j < rest.length; j += 4) {
    const [x, y, z] = rest.slice(j, j + 3).map(Number)
    if (![x, y, z].every(Number.isInteger)) usage(`bad coordinates ${rest.slice(j, j + 3).join(' ')}`)
    blocks.push({ x, y, z, expected: rest[j + 3].replace(/^minecraft:/, '') })
  }
  opts.port = Number(opts.port)
  if (!Number.isInteger(opts.port) || opts.port <= 0 || opts.port > 65535) usage('--port must be a port number')
  opts.waitReady = Number(opts.waitReady)
  opts.timeout = Number(opts.timeout)
  if (!(opts.waitReady >= 0) || !(opts.timeout > 0)) usage('--wait-ready and --timeout take seconds')
  if (!/^[A-Za-z0-9_]{3,16}$/.test(opts.username)) usage('--username must be 3 to 16 letters, digits or _')
  opts.mode = mode
  opts.blocks = blocks
  return opts
}

const opts = parseArgs(process.argv.slice(2))
const mineflayer = require('mineflayer')
const { Vec3 } = require('vec3')

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// Connect and wait for the spawn; reject with err.retryable when the server is not there.
function connectOnce () {
  return new Promise((resolve, reject) => {
    const bot = mineflayer.createBot({
      host: opts.host,
      port: opts.port,
      username: opts.username,
      auth: 'offline',
      version: opts.version,
      hideErrors: true,
      checkTimeoutInterval: 30000
    })
    let settled = false
    const fail = (err, retryable) => {
      if (settled) return
      settled = true
      err.retryable = retryable
      try { bot.end() } catch (_) {}
      reject(err)
    }
    const timer = setTimeout(() => fail(new Error('no spawn within 30 s'), true), 30000)
    bot.once('spawn', () => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      resolve(bot)
    })
    bot.once('kicked', (reason) => {
      clearTimeout(timer)
      const text = typeof reason === 'string' ? reason : JSON.stringify(reason)
      // flying-squid kicks with "Server is still starting!" before its plugins are loaded
      fail(new Error(`kicked: ${text}`), /starting/i.test(text))
    })
    bot.once('error', (err) => {
      clearTimeout(timer)
      fail(err, ['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT'].includes(err.code))
    })
    bot.once('end', (reason) => {
      clearTimeout(timer)
      fail(new Error(`connection ended: ${reason}`), true)
    })
  })
}

async function connect () {
  const deadline = Date.now() + opts.waitReady * 1000
  let attempt = 0
  for (;;) {
    attempt++
    try {
      return await connectOnce()
    } catch (err) {
      if (!err.retryable || Date.now() + 500 > deadline) throw err
      if (attempt === 1 || attempt % 10 === 0) log(`not ready yet (${err.code || err.message}), retrying`)
      await sleep(500)
    }
  }
}

function blockName (bot, pos) {
  const block = bot.blockAt(pos)
  return block ? block.name : null
}

async function ensureLoaded (bot, pos) {
  if (bot.blockAt(pos) !== null) return true
  // Bring the chunk into view: teleport above it. flying-squid sends the chunks around a
  // player only on the *next* move after the teleport, and mineflayer does not move in an
  // unloaded chunk, so teleport twice.
  const y = Math.max(pos.y + 2, 100)
  const until = Date.now() + BLOCK_WAIT_MS
  while (Date.now() < until) {
    bot.chat(`/tp ${pos.x} ${y} ${pos.z}`)
    await sleep(300)
    bot.chat(`/tp ${pos.x} ${y + 1} ${pos.z}`)
    for (let i = 0; i < 20 && Date.now() < until; i++) {
      await sleep(100)
      if (bot.blockAt(pos) !== null) return true
    }
  }
  return false
}

async function waitFor (bot, pos, expected) {
  const until = Date.now() + BLOCK_WAIT_MS
  let name = blockName(bot, pos)
  while (name !== expected && Date.now() < until) {
    await sleep(100)
    name = blockName(bot, pos)
  }
  return name
}

async function run (bot) {
  for (const b of opts.blocks) {
    if (!bot.registry.blocksByName[b.expected]) {
      // flying-squid crashes on /setblock with an unknown name: refuse it here
      return { code: 2, result: { ok: false, mode: opts.mode, blocks: [], error: `unknown block ${b.expected}` } }
    }
  }
  const results = []
  for (const b of opts.blocks) {
    const pos = new Vec3(b.x, b.y, b.z)
    const loaded = await ensureLoaded(bot, pos)
    let actual = loaded ? blockName(bot, pos) : null
    if (opts.mode === 'place') {
      bot.chat(`/setblock ${b.x} ${b.y} ${b.z} ${b.expected}`)
      actual = await waitFor(bot, pos, b.expected)
    }
    results.push({ x: b.x, y: b.y, z: b.z, expected: b.expected, actual, match: actual === b.expected })
  }
  const ok = results.every((r) => r.match)
  return { code: ok ? 0 : 1, result: { ok, mode: opts.mode, blocks: results, error: null } }
}

async function main () {
  let bot
  try {
    bot = await connect()
  } catch (err) {
    return emit({ ok: false, mode: opts.mode, blocks: [], error: `could not join ${opts.host}:${opts.port}: ${err.message}` }, 3)
  }
  log(`joined ${opts.host}:${opts.port} as ${bot.username} at ${bot.entity.position}`)
  if (process.env.PEERHOST_BOT_DEBUG) {
    bot.on('chunkColumnLoad', (p) => log(`chunk loaded ${p.x / 16},${p.z / 16}`))
    bot.on('chunkColumnUnload', (p) => log(`chunk unloaded ${p.x / 16},${p.z / 16}`))
    bot.on('forcedMove', () => log(`moved by the server to ${bot.entity.position}`))
    bot.on('messagestr', (m) => log(`message: ${m}`))
  }
  // Stand still: no position packets of ours racing the server's /tp teleports.
  bot.physicsEnabled = false
  // flying-squid finishes a login (and only then sends chunks when the player moves) on the
  // first `look` or `flying` packet; mineflayer sends neither while idle or falling (it
  // sends `position`/`position_look` then), so send one.
  const onGround = Boolean(bot.entity.onGround)
  bot._client.write('flying', { onGround, flags: { onGround, hasHorizontalCollision: false } })
  await sleep(200)
  const overall = setTimeout(() => {
    emit({ ok: false, mode: opts.mode, blocks: [], error: `timed out after ${opts.timeout} s` }, 3)
  }, opts.timeout * 1000)
  bot.on('kicked', (reason) => {
    emit({ ok: false, mode: opts.mode, blocks: [], error: `kicked: ${JSON.stringify(reason)}` }, 3)
  })
  bot.on('end', (reason) => {
    emit({ ok: false, mode: opts.mode, blocks: [], error: `connection ended: ${reason}` }, 3)
  })
  try {
    const { code, result } = await run(bot)
    clearTimeout(overall)
    // leave politely so the server saves our player data, then report
    bot.removeAllListeners('end')
    bot.removeAllListeners('kicked')
    bot.quit()
    await sleep(200)
    emit(result, code)
  } catch (err) {
    emit({ ok: false, mode: opts.mode, blocks: [], error: String(err && err.stack ? err.stack : err) }, 3)
  }
}

main()
