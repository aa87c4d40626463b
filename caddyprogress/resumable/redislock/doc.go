// Package redislock keeps the locks and delivery claims of resumable
// uploads in Redis, so that several Caddy instances sharing one upload
// folder can each take any request of any upload (package resumable,
// its Coordinator): tusd's Locker, and one delivery per upload
// cluster-wide.
//
// # Locks
//
// A lock is a key set with SET NX and a lease (Config.Lease, default
// 5s) that the holder renews every third of the lease while it holds it.
// A request that finds the lock held PUBLISHes the upload ID on the
// tracker's release channel, every poll (200ms) until it gets the lock
// or its context ends; the holder, subscribed to that channel, calls
// tusd's requestRelease, so the PATCH it serves stops at once with the
// bytes it stored and lets go: a client that reconnects to another
// instance is not locked out. An instance subscribes only while it holds
// a lock: the subscription opens right after the round trip that takes
// its first lock (a request published before it is complete is
// published again a poll later), and closes once it has held no lock for
// Config.Linger (default 10s, so that a client's PATCHes in a row do not
// each pay a SUBSCRIBE); so an idle instance keeps no pub/sub connection
// open, and go-redis's health-check PING on it (every 3s) stops too. If the holder died, its lease ends within
// Config.Lease and the waiting request takes the lock then (tusd waits up
// to 20s for it). A lock that is no longer its holder's (the key another
// instance's) counts as lost: its holder is asked to release it. A lease
// is not a fence: a holder frozen for longer than the lease (a suspended
// VM) may still write once it runs again, after another took the lock.
//
// # Redis down
//
// A lock whose renewals fail for a Redis error is kept: its request goes
// on, since no other instance can take the lock while Redis does not
// answer. Renewals are then tried every poll (200ms), and the first that
// reaches Redis again finds the key its own (renewed), gone (Redis
// restarted empty, or the lease ran out: set again with the holder's
// token), or another's (lost, as above).
//
// A Redis that restarted empty has lost the locks and claims of before
// while their holders may still run. Every lock or claim taken marks
// Redis, in the same round trip, with an alive key that each Coordinator
// also sets when it starts; a Redis without it restarted empty, and the
// call that sets it again starts a lease in which nothing new is granted
// (a lock waits, without asking anyone to let go; a claim waits): the
// holders of before set their locks again, or find their claims gone and
// stop, before anyone else may take them. An instance that starts in
// that lease cuts it short (it sets the key as if nothing was lost). A
// request that wants a lock while Redis does not answer is refused with
// 503 and Retry-After, unless it is the creation of the upload whose
// body cannot complete it (resumable.MayLockLocally): that lock is this
// process's alone, and set in Redis by the first renewal that reaches
// it. So an instance cut off from a Redis that the others still reach
// keeps writing the uploads it holds while another may take their
// locks once their lease has run out, until it reaches Redis again and
// lets go; a tus client only sends a second request for an upload when
// it gave up on the first.
//
// # Delivery claims
//
// A delivery claim is a key of its own, set and renewed the same way;
// its Lease's context ends when the claim is lost, which stops the
// delivery (the backend sees it cut short), so that no two instances
// ever deliver one upload at once. A claim left by an instance that
// died ends with its lease, and any instance may claim it then. Claims
// are only ever taken in Redis, and a claim whose renewals fail until the
// next would come after its lease (Redis down), or whose key is gone,
// counts as lost, a renewal period before the key can expire.
//
// # Disk budget
//
// With max_disk, the disk reservations of a store's uploads (package
// resumable's Budget) are one count for every instance that uses the
// store: a hash of the uploads' reservations ("bytes:ms", ms the time of
// the last change by Redis's clock) and their total, each change one Lua
// script call that reads, checks against the limit and writes both. A
// body without a length grows its reservation a MiB at a time (64 KiB
// in one process's count). An upload's reservation goes when the
// instance that removes or delivers it forgets it, wherever it was made;
// one whose upload was never made (its instance died between reserving
// and creating it) is dropped by a sweep once it has not changed for a
// minute: the first sweep after a reservation was refused on that
// instance (HKEYS, then one script call for those not in the store), so
// that an idle instance sends Redis nothing (nor does its renewal loop,
// with nothing held, nor its subscription, closed by then). While Redis does not answer (and for a second after each
// failure), each instance counts what it reserves meanwhile against
// max_disk on its own: nothing is refused for Redis being down.
//
// # Keys
//
// T is the tracker (query-escaped), ID an upload:
//
//	upload_progress:resumable:{T:ID}:lock      the lock: its holder's random token, with the lease as TTL
//	upload_progress:resumable:{T:ID}:delivery  the delivery claim, likewise
//	upload_progress:resumable:{T}:release      pub/sub channel of the IDs whose lock is wanted
//	upload_progress:resumable:{T}:alive        set once (0 at a Coordinator's start, else when it was found gone, in Unix ms)
//	upload_progress:resumable:{T}:disk:S       hash of the reservations of store S (query-escaped: the upload folder)
//	upload_progress:resumable:{T}:disk:S:total their total, in bytes
//
// Calls wait at most Config.Timeout (default 1s) each; Redis down makes
// Lock (but for a creation's, above) and ClaimDelivery fail with an
// error.
package redislock
