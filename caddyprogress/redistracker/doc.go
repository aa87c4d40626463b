// Package redistracker is the Redis side of an upload_progress tracker:
// it lets several Caddy instances behind a load balancer share their
// uploads, so that an upload running on instance A can be followed
// (status, events, groups, reservations) through instance B. It knows
// nothing of the core package: uploads are IDs with an optional group
// ID, a State and an opaque JSON document that the core encodes. It
// uses github.com/redis/go-redis/v9 and no protocol code of its own.
//
// # Use from the core
//
//	tr, err := redistracker.New(redistracker.Config{URL: url, Tracker: name, ...})
//	u, err := tr.Claim(ctx, id, group, progress.StateUploading, doc) // ErrInFlight: 409; ErrFull
//	u.SetCurrent(func() (State, []byte) { ... }) // read when a watch is heard, and at lease renewals
//	u.Publish(state, doc)             // at most once per Interval while watched; never blocks
//	u.Publish(progress.StateComplete, doc) // the final one
//	tr.WatchDue(id); tr.Watch(ctx, id) // a route here follows an upload of another instance
//	tr.Reserve(ctx, id, doc)          // POST <status_path>, across the cluster
//	d, err := tr.Lookup(ctx, id)      // status and nginx routes on any instance
//	docs, err := tr.LookupGroup(ctx, group)
//	s, err := tr.Subscribe(ctx, id)   // or SubscribeGroup; then <-s.Notify(), s.Take()
//	tr.ShareRate(total, limiter, demand) // rate_limit_total across the cluster, while there is demand
//	tr.Health(), tr.Stats(), tr.Count(ctx) // admin listing and metrics
//	tr.List(ctx)                      // every instance's uploads in flight (listing.go)
//	redistracker.Key(url)             // refuse one tracker with two redis settings
//
// Calls on a request's path (Claim, Reserve, Lookup, LookupGroup,
// Subscribe, Watch) wait at most Config.Timeout (default 50ms), and not at all
// while Redis is marked down; Publish never waits. An upload's body
// reads never involve Redis.
//
// # URLs
//
//	redis://[user:password@]host[:port][/db]          one server
//	rediss://[user:password@]host[:port][/db]         one server over TLS
//	unix://[user:password@]/path/redis.sock[?db=N]    a Unix socket
//	redis-sentinel://[user:password@]host[:port][/db]?master_name=NAME[&addr=host2:port2...][&password=P]
//	rediss-sentinel://...                             Sentinel (over TLS): the userinfo is the
//	                                                  Sentinels', password= the master's
//	redis-cluster://[user:password@]host[:port][?addr=host2:port2...]
//	rediss-cluster://...                              Redis Cluster (over TLS)
//
// They are parsed by go-redis's ParseURL, ParseFailoverURL and
// ParseClusterURL (the -sentinel and -cluster schemes choose the parser),
// so their query parameters (dial_timeout, pool_size, skip_verify, ...)
// are go-redis's options. The client is used through go-redis's
// UniversalClient interface. Key gives a comparable form of a URL.
//
// # Keys
//
// Names are query-escaped (a ':' in a tracker name becomes %3A), so
// trackers never share a key; T is the tracker, ID an upload, G a group:
//
//	upload_progress:{T:ID}:record      hash: st (state), doc, own (claim token), lease (ms), grp, seq,
//	                                   ins (instance), w (watched until, ms); w alone: a watch before the claim
//	upload_progress:{T:ID}:events      pub/sub channel of the upload's documents
//	upload_progress:group:{T:G}:members  hash: member ID -> "token state expires seq summary"
//	                                   (summary: Config.Summary of the member's document)
//	upload_progress:group:{T:G}:events   pub/sub channel of the members' documents
//	upload_progress:tracker:{T}:live   sorted set: uploads in flight by lease deadline
//	upload_progress:tracker:{T}:done   sorted set: finished uploads and reservations by expiry
//	upload_progress:tracker:{T}:demand, :demand_count  instances sharing rate_limit_total
//	upload_progress:tracker:{T}:watch  pub/sub channel of the IDs other instances watch
//
// The braces are Redis Cluster hash tags: one upload's keys share a
// slot, as do one group's and the tracker's indexes, and every script
// touches one slot only. A message is "<seq> <state> <id> <group>\n<doc>".
//
// # Publishing
//
// Progress goes to Redis on demand (watch.go): only while another
// instance watches the upload, because a route of its serves the
// upload's status, nginx report or event stream (group members always).
// An upload that nobody follows elsewhere costs its claim and its
// final document only. The first status poll of a watch period waits
// (at most an Interval) for the document the uploading instance sends
// when it hears the watch, so it is current, not the claim's.
//
// Each tracker has one publisher goroutine. Publish records the
// upload's latest document (one entry per upload, so the queue is
// bounded by the uploads in flight and a waiting document is replaced,
// never queued). A final document goes at once (while final documents
// keep coming, after 10ms, so that they share round trips), and is
// PUBLISHed only if the record is watched (a follower watches before
// it looks the upload up, so it reads it or gets it); a first one (which the
// claim stored in the record already, for Lookup) like a progress one
// (a group member's with the next batch, within half an Interval, for
// the group's hash); progress
// documents go on the publisher's tick, every half Interval, each
// upload's at most every second tick: at most once per Interval per
// upload, after a wait of at most half an Interval; the answer to a
// watch (the current document, SetCurrent) with the next batch. The due documents
// go in one pipeline: a Lua script that, per upload, stores the
// document, sets a final one's TTL and PUBLISHes it (plus the group's
// hash), so one round trip carries the documents of all uploads. The
// script is one call for up to 256 uploads (batch.go): a call costs
// Redis more than the commands in it. On Redis Cluster, where each
// upload's record is in a slot of its own, it is one call per upload,
// in the same pipeline. Plain
// pub/sub, not a Stream: a subscriber that connects late reads the
// record first (Lookup) and needs no history, and a Stream per upload
// would have to be trimmed and read with a blocking XREAD per upload.
// Documents carry a per-ID seq, so a subscriber drops one it has (a
// lookup and a message can overlap).
//
// # Claims and leases
//
// Claim counts the ID into the tracker's records (admitScript: at
// MaxUploads, the finished record closest to expiry is evicted, or
// ErrFull) and claims it (putScript): refused with ErrInFlight while
// another claim's upload is in flight. The two scripts touch different
// hash slots, so they cannot be one script, but they go in one
// pipelined round trip, and the claims that arrive together on one
// instance share it (group commit): Claim hands its claim to the
// tracker's claimer goroutine and waits for its own answer, within
// Timeout; the claimer sends every claim queued in one pipeline, at
// once when it has been idle (while claims keep coming, after 5ms), so
// the claims that arrive while a pipeline is in flight go together in
// the next, with one admitScript for all of them (the indexes are one
// hash slot) and one putScript call for all (one each on Redis
// Cluster). When
// admitScript refuses, the
// record putScript wrote is taken back (undoPutScript: one more round
// trip for the batch, before the refused claims get ErrFull; a Lookup
// in between may see the record). The claim publishes nothing, so no
// refused upload is ever published, and it counts as the upload's
// first publish: its document goes to subscribers through the
// publisher an Interval later if the upload is watched, or not at all
// if the final one comes first (a group member's goes with the next
// batch, for the group's hash). Reserve works the same way, in
// a round trip of its own. A claim holds a lease (default
// 5s), renewed by one loop per tracker in one pipeline, three times
// per lease, for the uploads whose lease was set half a period ago or
// more (a shorter upload is never renewed). An instance that runs or
// follows uploads (see Idle) scans the live index every second (or
// twice per lease, if shorter), and any instance scans at once when a
// claim or reservation is refused; an upload whose lease
// has passed (its instance died, or lost Redis) is ended as aborted with
// error "instance lost" by abortScript, which acts once whichever
// instance gets there first, and publishes the final document, built by
// Config.LostDoc from the last one (DefaultLostDoc edits the core's
// status fields). So a lost instance's uploads end within lease + 1s
// when another instance runs or follows uploads, and within a second
// of the first status poll, event stream or claim that needs them
// otherwise. A claim of the ID of such an upload takes it over at once
// (putScript): a resumable upload that goes on through another
// instance after its tracking instance died is tracked there, not ended
// as lost.
// The renewal of an upload nobody watches also stores its current
// document (SetCurrent), unpublished: its record, and its "instance lost"
// document, are as old as the last renewal at most (an upload shorter
// than half a renewal period keeps its claim's).
// A finished record expires Retain after it finished (a Redis TTL).
//
// # Subscriptions
//
// One pub/sub connection per tracker carries every channel its local
// subscribers follow, and the tracker's watch channel while uploads
// run here; a channel is subscribed for the first and unsubscribed
// after the last, and the connection is open only while some channel
// is (so an idle tracker holds none, and go-redis's health-check PING,
// every 3s without traffic, stops with it). Subscribe returns once Redis has
// confirmed the subscription. After go-redis reconnects it (Redis
// restarted or the connection broke), each channel's subscribers get
// the current documents, looked up, since what was published meanwhile
// is lost: a final document included. A slow subscriber's queue holds
// 64 documents; past that its oldest progress document is dropped,
// never a final one.
//
// # Redis slow or down
//
// Every command has a deadline (Timeout on a request's path, 1s in the
// background loops). A network error, or a timeout in a background
// loop, marks Redis down (logged once, with the error; Health shows
// it); a call on a request's path that runs out of its Timeout fails
// (ErrUnavailable; a claim hands back a handle, claimed later) and has
// the health loop ping Redis at once, which marks it down if the ping
// fails (within 1s): under load such calls time out while Redis
// answers, and marking it down for them made the tracker flap between
// shared and local. While down, the calls
// return at once (Claim hands back a handle, the others
// ErrUnavailable) and the uploads go on locally. The health loop pings
// every 250ms while Redis is marked down (not while it is up: then the
// other round trips notice a failure); when Redis answers again (logged once), the scripts are
// loaded again and every upload of this instance is re-claimed and its
// latest document republished (final ones included), so a restarted,
// empty Redis learns them back. An upload whose ID another instance
// took or ended meanwhile goes on locally only (Upload.Lost, Stats.Lost;
// logged at most once a second).
// Subscribers on other instances get the republished documents, or
// look them up once their pub/sub connection is back, whichever comes
// first.
//
// # Shared bandwidth
//
// ShareRate shares rate_limit_total across instances without a Redis
// round trip per read: every 100ms each instance with demand registers
// it (its throttled uploads) and sets its local limiter to its share,
// total × mine / all. An instance whose demand falls to none registers
// that once and keeps what one more upload would get; without demand it
// sends nothing, and the claim of its next upload registers its demand
// and takes its share in the claim's own round trip, before the body
// is read. In TestSharedRateLimitHoldsAcrossInstances (two instances,
// each with its own client and limiter, readers as fast as the limiters
// allow), 1 and 3 uploads got the total within 0.1 % over 3 s, split
// 1:3, and when the one upload ended the other instance's three got it
// within 1.5 % (three runs); a change of demand shows after one slice.
// Real uploads read in bursts, so the accuracy through HTTP is for the
// handler's tests to measure.
//
// # Idle
//
// A tracker with nothing in flight on this instance and nobody
// following from it makes no Redis round trip (idle.go): each loop
// that reaches Redis runs only while it has something to do. Two idle
// Caddy instances on one Redis (TestIdleInstancesMakeNoRedisCommands,
// counting through MONITOR the commands Redis runs for each instance's
// connections, a script's own included) sent 6.9 commands a second
// each before, 87.4 with rate_limit_total (health pings every 250ms,
// the lost-lease scan every second, the demand registration every
// 100ms, the pub/sub health check every 3s); now none, with or without.
// An instance that neither uploads nor follows stays silent while
// another one uploads.
//
// # Figures
//
// Measured on a 2-core AMD EPYC VM, Redis 7.0 on loopback (go test
// -bench): a document published with 1,000 uploads in flight (and
// watched) costs 8µs of wall time (about 990 B and 12 allocations) and
// 0.001 round trips; uploads claimed one after the other, 1,000 in
// flight, watched, take 1.08 round trips each over their whole life
// (claim, 12 documents: each claim waits for its own, and the
// benchmark's 1ms tick sends more batches meanwhile); a published
// document reaches a subscriber on another instance in 107µs (p50) and
// 220µs (p99); at the default Interval, a progress document handed to
// the uploading instance reaches it in 25ms (p50) and 60ms (p99, max),
// the publisher's tick included. With 1,000 uploads of 256 KiB in flight across two Caddy
// instances that nobody follows from another instance (the handler's
// BenchmarkThousandUploadsInFlight, 5 runs), an upload costs 0.12 to
// 0.14 round trips, 1.0 document (its final one; the claim stored the
// first) and 0.16 to 0.18 s of redis-server CPU per GiB (0.21 to 0.29,
// 1.9 to 2.0 and 0.20 to 0.26 s before progress went on demand and
// claims and final documents that keep coming waited 5 and 10ms, not
// 2 and 5ms).
package redistracker
