// uppy-token.mjs uploads files with Uppy (@uppy/core and @uppy/tus,
// headless, Buffer data) to an endpoint with status_access token: each
// file's requests after its creation carry the X-Upload-Token its
// creation got, through the headers option, as the README shows. Usage:
//
//	node uppy-token.mjs <endpoint> <chunk size> <file>...
//
// It prints one JSON line: {"event": "done", "successful": [...],
// "failed": [...]}, each with the file name and upload URL.
import Uppy from '@uppy/core'
import Tus from '@uppy/tus'
import fs from 'node:fs'
import path from 'node:path'

const [endpoint, chunkSize, ...files] = process.argv.slice(2)
const uppy = new Uppy({ autoProceed: false })

// The README's snippet: one headers object per file, filled in when the
// file's creation answers.
const headersOf = new Map() // file ID -> the headers of its requests
const fileOf = new WeakMap() // request -> its file
uppy.use(Tus, {
  endpoint,
  chunkSize: Number(chunkSize),
  retryDelays: [0, 1000],
  headers: (file) => {
    if (!headersOf.has(file.id)) headersOf.set(file.id, {})
    return headersOf.get(file.id)
  },
  onBeforeRequest: (req, file) => { fileOf.set(req, file) },
  onAfterResponse: (req, res) => {
    const token = res.getHeader('X-Upload-Token')
    if (token) headersOf.get(fileOf.get(req).id)['X-Upload-Token'] = token
  },
})

for (const file of files) {
  uppy.addFile({ name: path.basename(file), type: 'application/octet-stream', data: fs.readFileSync(file) })
}
const result = await uppy.upload()
const summary = (f) => ({ name: f.name, url: f.tus?.uploadUrl ?? f.response?.uploadURL, error: String(f.error ?? '') })
process.stdout.write(JSON.stringify({
  event: 'done',
  successful: result.successful.map(summary),
  failed: result.failed.map(summary),
}) + '\n')
process.exit(result.failed.length === 0 ? 0 : 1)
