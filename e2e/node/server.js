#!/usr/bin/env node
'use strict'
// A real Minecraft Java server (flying-squid, protocol 1.21.4) that PeerHost can run
// like a vanilla server:
//
//   node server.js --world DIR --port PORT [--seed N] [--host 127.0.0.1]
//                  [--view-distance N] [--generation diamond_square|superflat]
//                  [--max-players N] [--version 1.21.4]
//
// * prints `[HH:MM:SS] [Server thread/INFO]: Done (X.XXXs)! For help, type "help"` once it
//   listens and its plugins are loaded (`--port 0` picks a free port; the line
//   `Starting Minecraft server on HOST:PORT` printed just before it gives the port);
// * reads console commands from stdin, one per line: `stop`, `save-all [flush]`,
//   `save-off`, `save-on` answer with vanilla's wording; other lines go to flying-squid's
//   own commands (`help`, `setblock`, `say`, ...);
// * on `stop`, SIGTERM or SIGINT: saves the players, kicks them, writes every queued chunk,
//   fsyncs and closes the region files, then exits 0 (1 if that took longer than 30 s).
//
// flying-squid itself (1.12.0) writes changed chunks to the region files every second (the
// `savingInterval` of prismarine-world), but its own `stop` and its SIGTERM/SIGINT handler
// (exit-hook) exit without waiting for the queued chunks: this wrapper replaces both.

const readline = require('readline')
const fs = require('fs')
const path = require('path')
const { performance } = require('perf_hooks')

// ---------------------------------------------------------------------------------------
// Arguments

function usage (message) {
  if (message) process.stderr.write(`server.js: ${message}\n`)
  process.stderr.write('usage: node server.js --world DIR --port PORT [--seed N] [--host HOST]' +
    ' [--view-distance N] [--generation NAME] [--max-players N] [--version V]\n')
  process.exit(2)
}

function parseArgs (argv) {
  const opts = {
    world: null,
    port: null,
    seed: 20261130,
    host: '127.0.0.1',
    viewDistance: 2,
    generation: 'diamond_square',
    maxPlayers: 4,
    version: '1.21.4'
  }
  const names = {
    '--world': 'world',
    '--port': 'port',
    '--seed': 'seed',
    '--host': 'host',
    '--view-distance': 'viewDistance',
    '--generation': 'generation',
    '--max-players': 'maxPlayers',
    '--version': 'version'
  }
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i]
    let value
    const eq = arg.indexOf('=')
    if (arg.startsWith('--') && eq > 0) {
      value = arg.slice(eq + 1)
      arg = arg.slice(0, eq)
    }
    if (arg === '-h' || arg === '--help') usage()
    const key = names[arg]
    if (!key) usage(`unknown argument ${arg}`)
    if (value === undefined) {
      if (i + 1 >= argv.length) usage(`${arg} needs a value`)
      value = argv[++i]
    }
    opts[key] = value
  }
  if (!opts.world) usage('--world is required')
  if (opts.port === null) usage('--port is required')
  for (const key of ['port', 'seed', 'viewDistance', 'maxPlayers']) {
    const n = Number(opts[key])
    if (!Number.isInteger(n)) usage(`--${key} must be an integer`)
    opts[key] = n
  }
  if (opts.port < 0 || opts.port > 65535) usage('--port out of range')
  return opts
}

const opts = parseArgs(process.argv.slice(2))

// ---------------------------------------------------------------------------------------
// Plain output. flying-squid's log plugin writes a readline prompt ("> ") and cursor escape
// codes to stdout even when stdout is a pipe, and exit-hook (which it loads) exits on
// SIGTERM/SIGINT without waiting for the chunks to be written. Neutralise both before
// loading flying-squid.

const stdoutIsTTY = Boolean(process.stdout.isTTY)
const origCursorTo = readline.cursorTo
readline.cursorTo = function (stream, ...rest) {
  if (stream && stream.isTTY) return origCursorTo.call(this, stream, ...rest)
  if (typeof rest[rest.length - 1] === 'function') rest[rest.length - 1]()
  return true
}
const origCreateInterface = readline.createInterface
readline.createInterface = function (options, ...rest) {
  if (!stdoutIsTTY && options && options.input === process.stdin) {
    // no output stream: no prompt written into our log
    return origCreateInterface.call(this, { input: process.stdin, terminal: false })
  }
  return origCreateInterface.call(this, options, ...rest)
}
const origOnce = process.once
process.once = function (event, listener) {
  if (event === 'SIGINT' || event === 'SIGTERM') return process // exit-hook: ours wins
  return origOnce.call(this, event, listener)
}

function stamp () {
  const d = new Date()
  const p = (n) => String(n).padStart(2, '0')
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`
}
function info (message) {
  process.stdout.write(`[${stamp()}] [Server thread/INFO]: ${message}\n`)
}
function warn (message) {
  process.stdout.write(`[${stamp()}] [Server thread/WARN]: ${message}\n`)
}

// ---------------------------------------------------------------------------------------
// The server

const mcServer = require('flying-squid')
if (!stdoutIsTTY) {
  // the same `colors` module flying-squid logs with: no escape codes in a pipe
  require(require.resolve('colors', { paths: [path.dirname(require.resolve('flying-squid'))] })).disable()
}
const defaultSettings = require('flying-squid/config/default-settings.json')

const worldFolder = path.resolve(opts.world)
fs.mkdirSync(worldFolder, { recursive: true })

info(`Starting minecraft server version ${opts.version} (flying-squid 1.12.0)`)

const serv = mcServer.createMCServer({
  ...defaultSettings,
  motd: 'PeerHost e2e server',
  port: opts.port,
  host: opts.host,
  'max-players': opts.maxPlayers,
  'online-mode': false,
  logging: false, // no logs/ folder in the working directory
  gameMode: 1,
  generation: {
    name: opts.generation,
    options: { seed: opts.seed, worldHeight: 80 }
  },
  kickTimeout: 10000,
  plugins: {},
  modpe: false,
  'view-distance': opts.viewDistance,
  'everybody-op': true,
  'max-entities': 100,
  version: opts.version,
  worldFolder
})

process.on('unhandledRejection', (err) => {
  warn(`unhandled rejection: ${err && err.stack ? err.stack : err}`)
})

// Track player saves so that shutdown can wait for them (flying-squid does not await the
// save it starts when a player disconnects).
const pendingSaves = new Set()
serv.on('newPlayer', (player) => {
  const save = player.save
  player.save = function () {
    const p = Promise.resolve().then(() => save.apply(this, arguments))
    pendingSaves.add(p)
    p.catch((err) => warn(`saving player ${player.username}: ${err}`)).finally(() => pendingSaves.delete(p))
    return p
  }
})

let listening = false
let pluginsReady = false
let announced = false
serv.on('listening', () => { listening = true; announce() })
serv.on('pluginsReady', () => { pluginsReady = true; announce() })
serv.on('error', (err) => {
  warn(`server error: ${err && err.message ? err.message : err}`)
  if (!announced) {
    process.stderr.write(`server.js: failed to start: ${err && err.message ? err.message : err}\n`)
    process.exit(1)
  }
})

// prismarine-world 3.7's saveNow() clears its whole queue *after* awaiting the writes, so a
// chunk changed while a save is under way is marked clean and its change is never written
// (seen: blocks set by /setblock missing after a restart). Take the batch first instead:
// a change made during the writes queues the chunk again. The chunk's NBT is built when
// save() is called, so each write holds the chunk as it was when its batch was taken.
function fixSaving (world) {
  if (!world || !world.storageProvider || world._peerhostSaving) return
  world._peerhostSaving = true
  world.saveNow = async function () {
    if (this.savingQueue.size === 0) return
    const batch = [...this.savingQueue.entries()]
    this.savingQueue.clear()
    for (const [key, { chunkX, chunkZ }] of batch) {
      const column = this.columns[key]
      if (!column) continue
      this.finishedSaving = Promise.all([this.finishedSaving, this.storageProvider.save(chunkX, chunkZ, column)])
    }
    await this.finishedSaving
    for (const [key, { chunkX, chunkZ }] of this.unloadQueue.entries()) {
      if (!this.savingQueue.has(key)) this.forceUnloadColumn(key, chunkX, chunkZ)
    }
    this.emit('doneSaving')
  }
}

function announce () {
  if (announced || !listening || !pluginsReady) return
  announced = true
  fixSaving(serv.overworld) // before any player can join (flying-squid kicks them until now)
  const port = serv._server.socketServer.address().port
  info(`Starting Minecraft server on ${opts.host}:${port}`)
  info(`Preparing level "${worldFolder}" (seed ${opts.seed}, generation ${opts.generation})`)
  info(`Done (${(performance.now() / 1000).toFixed(3)}s)! For help, type "help"`)
}

// ---------------------------------------------------------------------------------------
// Saving

let autosave = true // flying-squid starts prismarine-world's 1 s saving interval itself

async function flushWorld (world) {
  // write every queued chunk; a chunk changed while we write is queued again: loop
  for (let i = 0; i < 50; i++) {
    await world.saveNow()
    await world.finishedSaving
    if (world.savingQueue.size === 0) break
  }
}

async function syncRegions (world, close) {
  const provider = world.storageProvider
  if (!provider) return
  for (const region of Object.values(provider.regions)) {
    try {
      if (region.ini) await region.ini
      await region.q
      if (region.file) {
        await region.file.sync()
        if (close) await region.file.close()
      }
    } catch (err) {
      warn(`syncing ${region.fileName}: ${err}`)
    }
  }
}

async function saveAll () {
  await Promise.all(serv.players.map((p) => p.save()))
  await Promise.all([...pendingSaves])
  await flushWorld(serv.overworld)
  await syncRegions(serv.overworld, false)
}

let stopping = null
function shutdown (why) {
  if (stopping) return stopping
  const started = performance.now()
  info(`Stopping the server (${why})`)
  const timer = setTimeout(() => {
    warn('shutdown took longer than 30 s, exiting anyway')
    process.exit(1)
  }, 30000)
  stopping = (async () => {
    if (announced) {
      serv.overworld.stopSaving()
      autosave = false
      info('Saving players')
      await Promise.all(serv.players.map((p) => p.save()))
      await Promise.all([...pendingSaves])
      info('Saving worlds')
      try {
        await Promise.race([serv.quit('Server closed'), new Promise((resolve) => setTimeout(resolve, 5000))])
      } catch (err) {
        warn(`closing the server: ${err}`)
      }
      await Promise.all([...pendingSaves])
      await flushWorld(serv.overworld)
      await syncRegions(serv.overworld, true)
      info(`ThreadedAnvilChunkStorage: All dimensions are saved (${((performance.now() - started) / 1000).toFixed(3)}s)`)
    }
    clearTimeout(timer)
    process.exit(0)
  })().catch((err) => {
    warn(`shutdown failed: ${err && err.stack ? err.stack : err}`)
    process.exit(1)
  })
  return stopping
}

process.on('SIGTERM', () => shutdown('SIGTERM'))
process.on('SIGINT', () => shutdown('SIGINT'))

// ---------------------------------------------------------------------------------------
// Console commands (vanilla wording). flying-squid's log plugin already reads stdin and
// hands each line to serv.handleCommand; adding a command with the same base replaces it.

// Vanilla wording for an unknown console command (flying-squid says "Command not found");
// a leading slash is accepted as vanilla does.
const handleCommand = serv.handleCommand
serv.handleCommand = function (line) {
  const str = String(line).trim().replace(/^\//, '')
  if (!str) return Promise.resolve()
  if (!serv.commands.find(str)) {
    warn('Unknown or incomplete command, see below for error')
    warn(`${str}<--[HERE]`)
    return Promise.resolve()
  }
  return handleCommand.call(this, str)
}

serv.commands.add({
  base: 'stop',
  info: 'save the world and stop the server',
  usage: '/stop',
  op: true,
  action () { shutdown('stop command') }
})

serv.commands.add({
  base: 'save-all',
  info: 'write the world to disk now',
  usage: '/save-all [flush]',
  op: true,
  async action () {
    if (stopping) return
    const started = performance.now()
    info('Saving the game (this may take a moment!)')
    await saveAll()
    info(`Saved the game (${((performance.now() - started) / 1000).toFixed(3)}s)`)
  }
})

serv.commands.add({
  base: 'save-off',
  info: 'stop writing the world to disk',
  usage: '/save-off',
  op: true,
  action () {
    if (!autosave) return info('Saving is already turned off')
    serv.overworld.stopSaving()
    autosave = false
    info('Automatic saving is now disabled')
  }
})

serv.commands.add({
  base: 'save-on',
  info: 'write the world to disk every second again',
  usage: '/save-on',
  op: true,
  action () {
    if (autosave || stopping) return info('Saving is already turned on')
    serv.overworld.startSaving()
    autosave = true
    info('Automatic saving is now enabled')
  }
})
