// tus-upload.mjs uploads a file with tus-js-client, for the Go tests of
// caddyprogress/resumable. Usage:
//
//	node tus-upload.mjs <endpoint> <file> [<options JSON>]
//
// Options: pauseAt (bytes: pause there and wait for "resume" on stdin),
// exitAt (bytes: kill this process there), urlStorage (a file: store
// upload URLs there and resume a previous upload of the same file),
// metadata, headers, retryDelays, chunkSize, protocol, sendToken (send
// the X-Upload-Token of the creation's answer on every later request,
// as the README shows for status_access token), traceResponses (print a
// "response" event for every answer: method, status and the
// X-Served-By header a load balancer in front adds).
// It prints one JSON line per event: created, paused, resumed, success
// (with the last response's status and body) or error (with its status).
import * as tus from 'tus-js-client'
import fs from 'node:fs'
import readline from 'node:readline'

const [endpoint, file, optionsJSON] = process.argv.slice(2)
const opts = JSON.parse(optionsJSON || '{}')
const data = fs.readFileSync(file)
const emit = (event) => process.stdout.write(JSON.stringify(event) + '\n')

let paused = false
const commands = readline.createInterface({ input: process.stdin })

const options = {
  endpoint,
  metadata: opts.metadata ?? { filename: 'video.bin', filetype: 'application/octet-stream' },
  headers: opts.headers ?? {},
  retryDelays: opts.retryDelays ?? [0, 1000, 3000, 5000],
  chunkSize: opts.chunkSize ?? Infinity,
  removeFingerprintOnSuccess: true,
  onAfterResponse(req, res) {
    if (opts.traceResponses) {
      emit({ event: 'response', method: req.getMethod(), status: res.getStatus(), servedBy: res.getHeader('X-Served-By') ?? '' })
    }
    if (req.getMethod() === 'POST' && res.getStatus() === 201) {
      emit({ event: 'created', url: res.getHeader('Location') })
    }
    const token = res.getHeader('X-Upload-Token')
    if (opts.sendToken && token) upload.options.headers['X-Upload-Token'] = token
  },
  onProgress(sent, total) {
    if (opts.exitAt && sent >= opts.exitAt) {
      emit({ event: 'exiting', sent })
      process.kill(process.pid, 'SIGKILL')
    }
    if (opts.pauseAt && !paused && sent >= opts.pauseAt) {
      paused = true
      upload.abort().then(() => emit({ event: 'paused', sent, url: upload.url }))
    }
  },
  onSuccess({ lastResponse }) {
    emit({ event: 'success', status: lastResponse.getStatus(), body: lastResponse.getBody(), url: upload.url })
    process.exit(0)
  },
  onError(err) {
    const res = err.originalResponse
    emit({ event: 'error', message: String(err), status: res ? res.getStatus() : 0, body: res ? res.getBody() : '' })
    process.exit(1)
  },
}
if (opts.protocol) options.protocol = opts.protocol
if (opts.urlStorage) options.urlStorage = new tus.FileUrlStorage(opts.urlStorage)

const upload = new tus.Upload(data, options)

commands.on('line', (line) => {
  if (line.trim() === 'resume') {
    emit({ event: 'resumed' })
    upload.start()
  }
})

const previous = opts.urlStorage ? await upload.findPreviousUploads() : []
if (previous.length > 0) {
  emit({ event: 'found', url: previous[0].uploadUrl })
  upload.resumeFromPreviousUpload(previous[0])
}
upload.start()
