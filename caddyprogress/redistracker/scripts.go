package redistracker

import "github.com/redis/go-redis/v9"

// The Lua scripts that make each step atomic. They read the time from
// Redis (TIME), so the instances' clocks never have to agree. Each one
// touches the keys of one hash tag only, so that it runs on Redis
// Cluster: an upload's record, a group's hash, or the tracker's indexes.
//
// A record is a hash: st (state), doc (the JSON), own (the token of the
// claim that owns it), lease (the lease deadline, ms; it counts only
// while the state is in flight, and a final document leaves it), grp
// (its group), seq (the number of its last document), w (until when
// another instance watches it, ms; see watchScript) and ins (the name of
// the instance that claimed it, for the listing: listing.go).

// nowMS is the Lua prelude of every script that needs the time.
const nowMS = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// isLive is the Lua test of an in-flight state.
const isLive = `
local function live(st) return st == 'uploading' or st == 'processing' or st == 'paused' or st == 'delivering' end
`

// variadic is the Lua prelude of the scripts that act on many members
// of a sorted set at once: one command per 1,000 arguments (Lua's
// unpack takes a few thousand at most). eachPart calls f with
// args[from], args[from+1], ... in parts of 1,000; callEach runs cmd
// on key with each part (after opt, if any); scoresOf is ZMSCORE of
// any number of IDs.
const variadic = `
local function eachPart(args, from, f)
	for i = from, #args, 1000 do
		local part = {}
		for j = i, math.min(i + 999, #args) do part[#part + 1] = args[j] end
		f(part)
	end
end
local function callEach(cmd, key, opt, args, from)
	eachPart(args, from, function(part)
		if opt then table.insert(part, 1, opt) end
		redis.call(cmd, key, unpack(part))
	end)
end
local function scoresOf(key, ids)
	local out = {}
	eachPart(ids, 1, function(part)
		local got = redis.call('ZMSCORE', key, unpack(part))
		for j = 1, #part do out[#out + 1] = got[j] end
	end)
	return out
end
`

// putScript claims an ID for an upload and stores its document, or
// re-claims it after Redis was away. It refuses (0) while another claim's
// upload is in flight under a lease not yet passed (a lapsed one's
// instance is lost: the claim takes the ID over, as the scan would end
// it), and refuses a re-claim (-1) of a record the claim
// no longer owns as in flight (another instance ended it). A final
// state is stored without a lease. A re-claim also publishes the
// document (a first claim leaves that to the publisher, which also
// writes the group's hash).
//
// An upload in flight whose record another instance watches (its w
// field, see watchScript, is in the future) has its ID published on the
// watch channel, so that the claiming instance publishes its progress.
//
// KEYS[1] record. ARGV: token, state, doc, group, lease ms, retain ms,
// reclaim ("1" or "0"), least seq, id, upload channel or "", group
// channel or "", watch channel, the document as the group's channel
// carries it (Config.Summary), instance name. Returns the document's seq.
// putBatchScript does the same for several records (see batch.go).
const putBody = nowMS + isLive + `
local function put(key, token, state, doc, group, lease, retain, reclaim, least, id, upChan, groupChan, watchChan, summary, ins)
	local st, own, seq, w, held = unpack(redis.call('HMGET', key, 'st', 'own', 'seq', 'w', 'lease'))
	if live(st) and own ~= token and tonumber(held or '0') > now then return 0 end
	if reclaim == '1' and st and own == token and not live(st) then return -1 end
	seq = math.max((tonumber(seq) or 0) + 1, tonumber(least))
	local ttl = tonumber(retain)
	if live(state) then
		redis.call('HSET', key, 'st', state, 'doc', doc, 'own', token, 'grp', group, 'seq', seq, 'ins', ins, 'lease', now + tonumber(lease))
		ttl = ttl + tonumber(lease)
	else
		redis.call('HSET', key, 'st', state, 'doc', doc, 'own', token, 'grp', group, 'seq', seq, 'ins', ins)
		if st then redis.call('HDEL', key, 'lease') end
	end
	redis.call('PEXPIRE', key, ttl)
	if upChan ~= '' then
		local head = seq .. ' ' .. state .. ' ' .. id .. ' ' .. group .. '\n'
		redis.call('PUBLISH', upChan, head .. doc)
		if groupChan ~= '' then redis.call('PUBLISH', groupChan, head .. summary) end
	end
	if w and live(state) and tonumber(w) > now then redis.call('PUBLISH', watchChan, id) end
	return seq
end
`

const putArgs = 14

var (
	putScript      = newScript(putBody + `return put(KEYS[1], unpack(ARGV))`)
	putBatchScript = newScript(putBody + batchLoop("put", putArgs))
)

// publishScript stores an owned upload's new document and publishes it
// on the upload's channel and its group's, in one step (a final one
// only if another instance watches the record, see watchScript, or it
// is a group member: a follower watches before it looks the upload up,
// so it either reads the final document or gets it); a final one
// sets the record's expiry to ttl (an upload in flight has its expiry
// renewed with its lease, see renewScript). -1: the claim
// does not own the record in flight any more (lost); -2: there is no
// record (Redis lost its data), so the upload must be re-claimed.
//
// KEYS[1] record. ARGV: token, state, doc, ttl ms, seq, id, upload
// channel, group channel or "", group, the document as the group's
// channel carries it (Config.Summary). publishBatchScript does the
// same for several records (see batch.go).
const publishBody = nowMS + isLive + `
local function publish(key, token, state, doc, ttl, seq, id, upChan, groupChan, group, summary)
	local st, own, w = unpack(redis.call('HMGET', key, 'st', 'own', 'w'))
	if not st then return -2 end
	if own ~= token or not live(st) then return -1 end
	redis.call('HSET', key, 'st', state, 'doc', doc, 'seq', seq)
	if not live(state) then
		redis.call('PEXPIRE', key, ttl)
		if groupChan == '' and not (w and tonumber(w) > now) then return tonumber(seq) end
	end
	local head = seq .. ' ' .. state .. ' ' .. id .. ' ' .. group .. '\n'
	redis.call('PUBLISH', upChan, head .. doc)
	if groupChan ~= '' then redis.call('PUBLISH', groupChan, head .. summary) end
	return tonumber(seq)
end
`

const publishArgs = 10

var (
	publishScript      = newScript(publishBody + `return publish(KEYS[1], unpack(ARGV))`)
	publishBatchScript = newScript(publishBody + batchLoop("publish", publishArgs))
)

// renewScript extends the lease of an owned upload in flight and, for
// an upload nobody watches, stores its current document without
// publishing it (same seq), so that its record, and the document of an
// "instance lost" end, are as old as the last renewal at most. 1: done;
// 0: lost; -2: no record (re-claim).
//
// KEYS[1] record. ARGV: token, lease ms, retain ms, state and document
// ("" and "" for none). renewBatchScript does the same for several
// records (see batch.go).
const renewBody = nowMS + isLive + `
local function renew(key, token, lease, retain, state, doc)
	local st, own = unpack(redis.call('HMGET', key, 'st', 'own'))
	if not st then return -2 end
	if own ~= token or not live(st) then return 0 end
	if live(state) then
		redis.call('HSET', key, 'lease', now + tonumber(lease), 'st', state, 'doc', doc)
	else
		redis.call('HSET', key, 'lease', now + tonumber(lease))
	end
	redis.call('PEXPIRE', key, tonumber(lease) + tonumber(retain))
	return 1
end
`

const renewArgs = 5

var (
	renewScript      = newScript(renewBody + `return renew(KEYS[1], unpack(ARGV))`)
	renewBatchScript = newScript(renewBody + batchLoop("renew", renewArgs))
)

// watchScript marks a record watched until ttl from now (its w field)
// and, when it is in flight, publishes its ID on the watch channel: the
// instance that runs the upload then publishes its progress documents
// (watch.go). An ID with no record yet gets a record holding the mark
// only, which expires with it, so that the upload that claims the ID
// within ttl is watched from its start (see putScript); Lookup does not
// see such a record.
//
// KEYS[1] record. ARGV: ttl ms, id, watch channel.
var watchScript = newScript(nowMS + isLive + `
local st = redis.call('HGET', KEYS[1], 'st')
local ttl = tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'w', now + ttl)
if not st then
	redis.call('PEXPIRE', KEYS[1], ttl)
elseif live(st) then
	redis.call('PUBLISH', ARGV[3], ARGV[2])
end
return 1
`)

// abortScript ends an upload whose lease has expired as aborted, with
// the document the scanner built from the last one, and publishes it.
// It acts only if the record is still the one the scanner read (same
// owner and seq), in flight, past its lease, so exactly one instance
// aborts it. Returns the new seq, or 0 when it did nothing.
//
// KEYS[1] record. ARGV: token, seq read, doc, retain ms, id, upload
// channel, group channel or "", group, the document as the group's
// channel carries it.
var abortScript = newScript(nowMS + isLive + `
local st, own, lease, seq = unpack(redis.call('HMGET', KEYS[1], 'st', 'own', 'lease', 'seq'))
if own ~= ARGV[1] or seq ~= ARGV[2] or not live(st) then return 0 end
if not lease or tonumber(lease) > now then return 0 end
seq = tonumber(seq) + 1
redis.call('HSET', KEYS[1], 'st', 'aborted', 'doc', ARGV[3], 'seq', seq)
redis.call('HDEL', KEYS[1], 'lease')
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local head = seq .. ' aborted ' .. ARGV[5] .. ' ' .. ARGV[8] .. '\n'
redis.call('PUBLISH', ARGV[6], head .. ARGV[3])
if ARGV[7] ~= '' then redis.call('PUBLISH', ARGV[7], head .. ARGV[9]) end
return seq
`)

// groupScript stores a member's document in its group's hash, as
// "<token> <state> <expires ms> <seq> <doc>", the document as
// Config.Summary makes it (the core's leaves out the files). A final document of a
// claim is never replaced by a later one of the same claim (a stale
// owner's), and the hash lives at least ttl.
//
// KEYS[1] group hash. ARGV: id, token, state, ttl ms, seq, doc.
var groupScript = newScript(nowMS + `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
	local tok, st = string.match(cur, '^(%S+) (%S+) ')
	if tok == ARGV[2] and (st == 'complete' or st == 'error' or st == 'aborted') then return 0 end
end
local ttl = tonumber(ARGV[4])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. (now + ttl) .. ' ' .. ARGV[5] .. ' ' .. ARGV[6])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
`)

// admitScript counts IDs into the tracker's records before they are
// claimed or reserved, holding max_uploads across the cluster: it drops
// expired records from the index, then for each ID in turn, when the
// tracker is full, makes room by evicting the finished record closest to
// expiry. An ID the tracker already counts is not counted twice. The
// claims that the claimer sends together share one call (the indexes
// are one hash slot), which reads and writes each index with one
// command for all of them. Returns, per ID, 1 and the evicted ID or "",
// or 0 and "" when every record is in flight.
//
// KEYS[1] live, KEYS[2] done. ARGV: limit (0: none), "live" or "done",
// ms from now to the score (lease or retain), IDs...
var admitScript = newScript(nowMS + variadic + `
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local limit = tonumber(ARGV[1])
local toLive = ARGV[2] == 'live'
local score = string.format('%d', now + tonumber(ARGV[3]))
local ids = {}
for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
local inLive = scoresOf(KEYS[1], ids)
local inDone = scoresOf(KEYS[2], ids)
local batch = {} -- the batch's IDs, never evicted for one another
for _, id in ipairs(ids) do batch[id] = true end
local count = -1 -- both indexes' size, counted once when the limit needs it
local oldest, nextOldest = nil, 1 -- eviction candidates, oldest first, fetched once
local adds, removes, seen, out = {}, {}, {}, {}
for i, id in ipairs(ids) do
	local ok, evicted = 1, ''
	local counted = inLive[i] or inDone[i] or seen[id]
	if limit > 0 and not counted then
		if count < 0 then count = redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2]) end
		if count >= limit then
			if not oldest then oldest = redis.call('ZRANGE', KEYS[2], 0, #ids * 2 - 1) end
			while oldest[nextOldest] and batch[oldest[nextOldest]] do nextOldest = nextOldest + 1 end
			if oldest[nextOldest] then
				evicted = oldest[nextOldest]
				nextOldest = nextOldest + 1
				removes[#removes + 1] = evicted
				count = count - 1
			else
				ok = 0
			end
		end
	end
	if ok == 1 then
		if not counted and count >= 0 then count = count + 1 end
		if not seen[id] then
			if toLive then
				if inDone[i] then removes[#removes + 1] = id end
				if not inLive[i] then adds[#adds + 1] = score; adds[#adds + 1] = id end
			else
				adds[#adds + 1] = score; adds[#adds + 1] = id
			end
		end
		seen[id] = true
	end
	out[#out + 1] = ok
	out[#out + 1] = evicted
end
callEach('ZREM', KEYS[2], nil, removes, 1)
callEach('ZADD', toLive and KEYS[1] or KEYS[2], nil, adds, 1)
return out
`)

// dropScript deletes an evicted record unless an upload claimed it
// again meanwhile.
//
// KEYS[1] record.
var dropScript = newScript(isLive + `
if live(redis.call('HGET', KEYS[1], 'st')) then return 0 end
return redis.call('DEL', KEYS[1])
`)

// undoPutScript deletes a record that putScript wrote for a claim or
// reservation that admitScript refused (the tracker was full), unless
// it changed since (another seq or owner).
//
// KEYS[1] record. ARGV: token, seq.
var undoPutScript = newScript(`
local own, seq = unpack(redis.call('HMGET', KEYS[1], 'own', 'seq'))
if own ~= ARGV[1] or seq ~= ARGV[2] then return 0 end
return redis.call('DEL', KEYS[1])
`)

// touchScript sets the lease deadline of the IDs in the live index:
// with "add", adding them (a re-claim), with "update" only of those
// still there (a renewal, which must not put back an upload that ended
// and was retired meanwhile). One ZADD for all of them.
//
// KEYS[1] live. ARGV: lease ms, "add" or "update", IDs...
var touchScript = newScript(nowMS + variadic + `
local score = string.format('%d', now + tonumber(ARGV[1]))
local args = {}
for i = 3, #ARGV do args[#args + 1] = score; args[#args + 1] = ARGV[i] end
callEach('ZADD', KEYS[1], ARGV[2] == 'update' and 'XX' or nil, args, 1)
return #ARGV - 2
`)

// retireScript moves finished IDs from the live index to the done index
// until their record expires: one ZREM and one ZADD for all of them.
//
// KEYS[1] live, KEYS[2] done. ARGV: retain ms, IDs...
var retireScript = newScript(nowMS + variadic + `
if #ARGV < 2 then return 0 end
local score = string.format('%d', now + tonumber(ARGV[1]))
local adds = {}
for i = 2, #ARGV do
	adds[#adds + 1] = score
	adds[#adds + 1] = ARGV[i]
end
callEach('ZREM', KEYS[1], nil, ARGV, 2)
callEach('ZADD', KEYS[2], nil, adds, 1)
return #ARGV - 1
`)

// expiredScript lists IDs of the live index whose lease deadline has
// passed, soonest first.
//
// KEYS[1] live. ARGV: how many at most.
var expiredScript = newScript(nowMS + `
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
`)

// forgetScript removes IDs from the live index when their record has no
// lease any more (expired, or ended and retired elsewhere).
//
// KEYS[1] live. ARGV: IDs...
var forgetScript = newScript(variadic + `
callEach('ZREM', KEYS[1], nil, ARGV, 1)
return #ARGV
`)

// demandScript registers this instance's demand for the shared
// bandwidth (its throttled uploads) until ttl, forgets instances whose
// registration expired, and returns the demand of all.
//
// KEYS[1] demand (instances by expiry), KEYS[2] demand counts.
// ARGV: instance, demand, ttl ms.
var demandScript = newScript(nowMS + `
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
for _, inst in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
	redis.call('ZREM', KEYS[1], inst)
	redis.call('HDEL', KEYS[2], inst)
end
local total = 0
for _, v in ipairs(redis.call('HVALS', KEYS[2])) do total = total + tonumber(v) end
return total
`)

// countScript counts the live index and the unexpired part of the
// done index.
//
// KEYS[1] live, KEYS[2] done.
var countScript = newScript(nowMS + `
return {redis.call('ZCARD', KEYS[1]), redis.call('ZCOUNT', KEYS[2], '(' .. now, '+inf')}
`)

// scriptSources are the scripts' sources by SHA-1, loaded into Redis's
// script cache when a command finds one missing (NOSCRIPT: the first
// use, or after a restart).
var scriptSources = map[string]string{}

// newScript makes a script and remembers its source for loading.
func newScript(src string) *redis.Script {
	s := redis.NewScript(src)
	scriptSources[s.Hash()] = src
	return s
}
