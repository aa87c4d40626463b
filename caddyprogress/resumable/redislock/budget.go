package redislock

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/resumable"
)

// budgetStep is how much a body's reservation grows at a time in the
// shared count: one round trip per MiB of a body whose length was not
// reserved beforehand (chunked, a deferred length), where the local
// count takes 64 KiB.
const budgetStep = 1 << 20

// budgetPause is how long a Budget counts on its own after Redis failed
// to answer, before it asks Redis again: a request does not wait on a
// Redis that is down for each of its reservations.
const budgetPause = time.Second

// pruneBatch bounds the uploads one prune call names.
const pruneBatch = 500

// Budget is the disk reservations of one store's uploads (max_disk), in
// a Redis hash that every instance using the store shares: see the
// package doc.
func (c *Coordinator) Budget(store string) resumable.Budget {
	return &budget{c: c, keys: c.keys.disk(store), own: resumable.NewLocalBudget()}
}

// budget is a resumable.Budget in Redis. While Redis does not answer,
// it counts in own, this instance's count of what it reserves meanwhile:
// max_disk then holds per instance, and nothing is refused for Redis
// being down. A reservation the shared count makes again leaves own.
type budget struct {
	c     *Coordinator
	keys  []string // the hash of the reservations, and their total
	own   resumable.Budget
	pause atomic.Int64 // until when (Unix ns) Redis is not asked, after a failure
	// refused is set when a reservation was refused or cut short: the
	// next Prune looks for reservations left by a dead instance then,
	// and not otherwise, so that an idle instance sends Redis nothing
	refused atomic.Bool
}

// run runs one operation of budgetScript: what the upload reserves
// then, -1 if a reservation was refused.
func (b *budget) run(op, id string, x, y, limit int64) (int64, error) {
	if time.Now().UnixNano() < b.pause.Load() {
		return 0, errRedisPaused
	}
	ctx, cancel := context.WithTimeout(b.c.ctx, b.c.cfg.Timeout)
	defer cancel()
	n, err := budgetScript.Run(ctx, b.c.cfg.Client, b.keys, op, id, x, y, limit).Int64()
	if err != nil {
		b.failed(err)
		return 0, err
	}
	if op != "forget" {
		b.own.Forget(id)
	}
	return n, nil
}

// errRedisPaused is run's error while Redis is not asked.
var errRedisPaused = errors.New("redis did not answer a moment ago")

// failed notes a Redis failure: Redis is left alone for budgetPause.
func (b *budget) failed(err error) {
	b.pause.Store(time.Now().Add(budgetPause).UnixNano())
	if b.c.downLog.Allow() {
		b.c.cfg.Logger.Warn("redis did not answer; max_disk counts this instance's uploads alone until it does",
			zap.Error(err))
	}
}

func (b *budget) Reserve(id string, n, limit int64) bool {
	got, err := b.run("set", id, n, 0, limit)
	if err != nil {
		return b.own.Reserve(id, n, limit)
	}
	return b.granted(got >= 0)
}

// granted notes a refusal (see refused) and returns ok.
func (b *budget) granted(ok bool) bool {
	if !ok {
		b.refused.Store(true)
	}
	return ok
}

func (b *budget) ReserveAtLeast(id string, n, limit int64) bool {
	got, err := b.run("atleast", id, n, 0, limit)
	if err != nil {
		return b.own.ReserveAtLeast(id, n, limit)
	}
	return b.granted(got >= 0)
}

func (b *budget) Grow(id string, want, limit int64) int64 {
	got, err := b.run("grow", id, want, 0, limit)
	if err != nil {
		return b.own.Grow(id, want, limit)
	}
	b.granted(got >= want)
	return got
}

func (b *budget) Settle(id string, stored, keep int64) {
	if _, err := b.run("settle", id, stored, keep, 0); err != nil {
		b.own.Settle(id, stored, keep)
	}
}

// Forget drops the reservation in Redis and in own: the instance that
// removes an upload (or delivers it) lets its reservation go, wherever
// it was made.
func (b *budget) Forget(id string) {
	b.own.Forget(id)
	_, _ = b.run("forget", id, 0, 0, 0)
}

// Prune drops, in Redis, the reservations of uploads not kept that no
// one changed for olderThan (by Redis's clock), if a reservation was
// refused here since the last time; and does the same in own.
func (b *budget) Prune(kept func(id string) bool, olderThan time.Duration) {
	b.own.Prune(kept, olderThan)
	if time.Now().UnixNano() < b.pause.Load() || !b.refused.Swap(false) {
		return
	}
	ctx, cancel := context.WithTimeout(b.c.ctx, b.c.cfg.Timeout)
	defer cancel()
	ids, err := b.c.cfg.Client.HKeys(ctx, b.keys[0]).Result()
	if err != nil {
		b.failed(err)
		return
	}
	args := []any{olderThan.Milliseconds()}
	for _, id := range ids {
		if kept(id) {
			continue
		}
		args = append(args, id)
		if len(args) > pruneBatch {
			b.prune(ctx, args)
			args = args[:1]
		}
	}
	if len(args) > 1 {
		b.prune(ctx, args)
	}
}

func (b *budget) prune(ctx context.Context, args []any) {
	n, err := pruneScript.Run(ctx, b.c.cfg.Client, b.keys, args...).Int()
	if err != nil {
		b.failed(err)
		return
	}
	if n > 0 {
		b.c.cfg.Logger.Info("dropped disk reservations of uploads that were never made (an instance died meanwhile)",
			zap.Int("uploads", n))
	}
}

// Step is budgetStep: see there.
func (*budget) Step() int64 { return budgetStep }

// budgetScript does one operation on an upload's reservation: KEYS[1]
// is the hash of reservations (upload ID: "bytes:ms", the time of its
// last change by Redis's clock), KEYS[2] their total. ARGV: the
// operation, the upload ID, two amounts (n or want or stored; keep),
// the limit (0: none). It returns what the upload reserves then, or -1
// for a reservation refused (set, atleast).
var budgetScript = redis.NewScript(`
local op, id = ARGV[1], ARGV[2]
local x, y, limit = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local v = redis.call('HGET', KEYS[1], id)
local held = 0
if v then held = tonumber(string.match(v, '^(%d+)')) end
if op == 'forget' then
	if v then
		redis.call('HDEL', KEYS[1], id)
		redis.call('DECRBY', KEYS[2], held)
	end
	return 0
end
local n = x
if op == 'settle' then
	n = math.max(x, math.min(held, y))
	if v and n == held then return held end
elseif op ~= 'set' and x <= held then -- atleast, grow
	return held
else
	local total = tonumber(redis.call('GET', KEYS[2]) or '0')
	if op == 'grow' then
		if limit > 0 then n = math.min(x, held + math.max(limit - total, 0)) end
	elseif limit > 0 and x > held and total - held + x > limit then
		return -1
	end
end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], id, string.format('%d:%d', n, t[1] * 1000 + math.floor(t[2] / 1000)))
if n ~= held then redis.call('INCRBY', KEYS[2], n - held) end
return n`)

// pruneScript drops the reservations named in ARGV[2..] that were not
// changed for ARGV[1] ms, from KEYS[1] and their total KEYS[2]; it
// returns how many it dropped.
var pruneScript = redis.NewScript(`
local t = redis.call('TIME')
local cutoff = t[1] * 1000 + math.floor(t[2] / 1000) - tonumber(ARGV[1])
local dropped = 0
for i = 2, #ARGV do
	local v = redis.call('HGET', KEYS[1], ARGV[i])
	if v then
		local held, at = string.match(v, '^(%d+):(%d+)$')
		if tonumber(at) < cutoff then
			redis.call('HDEL', KEYS[1], ARGV[i])
			redis.call('DECRBY', KEYS[2], tonumber(held))
			dropped = dropped + 1
		end
	end
end
return dropped`)

// Interface guard
var _ resumable.Budget = (*budget)(nil)
