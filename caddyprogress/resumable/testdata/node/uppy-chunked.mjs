// uppy-chunked.mjs uploads one file with Uppy (@uppy/core and @uppy/tus,
// headless, Buffer data) in PATCHes of at most <chunkSize> bytes, for
// the tests of resumable uploads behind a load balancer. Usage:
//
//	node uppy-chunked.mjs <endpoint> <chunkSize> <file>
//
// It prints one JSON line: {"event": "done", "successful": [...],
// "failed": [...]}, each with the file name and upload URL.
import Uppy from '@uppy/core'
import Tus from '@uppy/tus'
import fs from 'node:fs'
import path from 'node:path'

const [endpoint, chunkSize, file] = process.argv.slice(2)
const uppy = new Uppy({ autoProceed: false })
uppy.use(Tus, { endpoint, chunkSize: Number(chunkSize), retryDelays: [0, 1000, 3000] })
uppy.addFile({ name: path.basename(file), type: 'application/octet-stream', data: fs.readFileSync(file) })
const result = await uppy.upload()
const summary = (f) => ({ name: f.name, url: f.tus?.uploadUrl ?? f.response?.uploadURL, error: String(f.error ?? '') })
process.stdout.write(JSON.stringify({
  event: 'done',
  successful: result.successful.map(summary),
  failed: result.failed.map(summary),
}) + '\n')
process.exit(result.failed.length === 0 ? 0 : 1)
