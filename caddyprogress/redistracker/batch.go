package redistracker

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Batched scripts: a script that acts on one upload's record (put,
// publish, renew) also has a batch form that acts on several records in
// one call, with the same Lua function. A script call costs Redis far
// more than the few commands inside it (about two thirds of its CPU
// time with 1,000 uploads in flight), so the publisher, the claimer and
// the lease loop send one call per batch. On Redis Cluster each record
// is in a hash slot of its own, and a script may only touch one slot,
// so there every record gets its own call, in the same pipeline.

// recordCall is one record's part of a batch: its key and the
// arguments of the script's function after the key.
type recordCall struct {
	key  string
	args []any
}

// batchLoop is the Lua entry point of a batch script: it calls fn for
// each key, with the key's n arguments, and returns the results in
// order.
func batchLoop(fn string, n int) string {
	args := make([]string, n)
	for i := range args {
		args[i] = fmt.Sprintf("ARGV[a + %d]", i+1)
	}
	return fmt.Sprintf(`
local out = {}
for i = 1, #KEYS do
	local a = (i - 1) * %d
	out[i] = %s(KEYS[i], %s)
end
return out
`, n, fn, strings.Join(args, ", "))
}

// maxBatch is the most records one batch call acts on: a script holds
// Redis for its whole run, so a large batch goes in several calls.
const maxBatch = 256

// callRecords queues calls: one call of batch per maxBatch of them, or,
// on Redis Cluster (or for a single record), one call of single each.
// The function it returns gives the integer result of call i once the
// pipeline has run (from one goroutine); a failed batch call fails
// every record in it.
func (t *Tracker) callRecords(ctx context.Context, p redis.Pipeliner, single, batch *redis.Script, calls []recordCall) func(i int) (int64, error) {
	if t.cluster || len(calls) == 1 {
		cmds := make([]*redis.Cmd, len(calls))
		for i, c := range calls {
			cmds[i] = single.EvalSha(ctx, p, []string{c.key}, c.args...)
		}
		return func(i int) (int64, error) { return cmds[i].Int64() }
	}
	var chunks []*batchCall
	for from := 0; from < len(calls); from += maxBatch {
		chunks = append(chunks, queueBatch(ctx, p, batch, calls[from:min(from+maxBatch, len(calls))]))
	}
	return func(i int) (int64, error) { return chunks[i/maxBatch].result(i % maxBatch) }
}

// batchCall is one call of a batch script.
type batchCall struct {
	cmd     *redis.Cmd
	n       int // records in the call
	read    bool
	results []int64
	err     error
}

// queueBatch queues one call of batch for calls.
func queueBatch(ctx context.Context, p redis.Pipeliner, batch *redis.Script, calls []recordCall) *batchCall {
	keys := make([]string, len(calls))
	args := make([]any, 0, len(calls)*len(calls[0].args))
	for i, c := range calls {
		keys[i] = c.key
		args = append(args, c.args...)
	}
	return &batchCall{cmd: batch.EvalSha(ctx, p, keys, args...), n: len(calls)}
}

// result is the result for record i of the call, read once the
// pipeline has run.
func (b *batchCall) result(i int) (int64, error) {
	if !b.read {
		b.read = true
		if b.results, b.err = b.cmd.Int64Slice(); b.err == nil && len(b.results) != b.n {
			b.err = fmt.Errorf("batch script answered %d results for %d records", len(b.results), b.n)
		}
	}
	if b.err != nil {
		return 0, b.err
	}
	return b.results[i], nil
}
