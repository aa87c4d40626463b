// uppy-group.mjs uploads files with Uppy (@uppy/core and @uppy/tus,
// headless, Buffer data) as one group, for the Go tests of
// caddyprogress/resumable. Usage:
//
//	node uppy-group.mjs <endpoint> <group> <file>...
//
// It prints one JSON line: {"event": "done", "successful": [...],
// "failed": [...]}, each with the file name and upload URL.
import Uppy from '@uppy/core'
import Tus from '@uppy/tus'
import fs from 'node:fs'
import path from 'node:path'

const [endpoint, group, ...files] = process.argv.slice(2)
const uppy = new Uppy({ autoProceed: false })
uppy.use(Tus, { endpoint, headers: { 'X-Upload-Group': group }, retryDelays: [0, 1000] })
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
