package caddyprogress

import (
	"bytes"
	"hash/maphash"
	"time"
	"unsafe"
)

// A finished record is kept as its final status document (encoded once,
// when the upload ended: what polls and the final event send) and the
// few figures groups and the nginx report need, in memory that holds no
// pointers: the documents in large byte chunks, the figures in one slice
// of slots, found through a map from a hash of the ID to the slot. The
// garbage collector has nothing to look at in them, so a full tracker
// costs it little, whatever its size. The live *upload is dropped from
// the tracker when it ends; event streams that hold it still read it.

// arenaChunk is the size of the byte chunks documents are kept in; a
// larger document gets a chunk of its own.
const arenaChunk = 64 << 10

// indexEntryBytes is what one entry of the store's index map takes, by
// its key and value and the map's slack (measured with
// TestAccountedMemoryFollowsTheHeap).
const indexEntryBytes = 32

// finishedSlot is one finished record. It holds no pointers.
type finishedSlot struct {
	summary   docSummary
	expiresAt int64  // unix nanoseconds
	idHash    uint64 // the index key
	groupHash uint64 // the group's key, 0 for none (group.go)
	upstream  int32  // the answer's status code, 0 for none
	heapIndex int32  // position in the expiry heap
	chunk     uint32 // where the ID, head and files are, one after another
	off       uint32
	idLen     uint32
	headLen   uint32
	filesLen  uint32
}

// finishedStore is a tracker's finished records, guarded by its lock.
// It is also a container/heap of its slots, soonest expiry first.
type finishedStore struct {
	seed  maphash.Seed
	index map[uint64]uint32 // idHash to slot
	slots []finishedSlot
	free  []uint32 // slots not in use
	order []uint32 // the expiry heap of slots in use

	chunks     [][]byte // nil where released
	chunkLive  []int    // bytes in use in each chunk
	freeChunks []uint32 // released chunk numbers, to use again
	cur        int      // the chunk being filled, -1 for none
	chunkBytes int64    // the capacity of the chunks held
}

func newFinishedStore() *finishedStore {
	return &finishedStore{seed: maphash.MakeSeed(), index: make(map[uint64]uint32), cur: -1}
}

// hash is the index key of an upload or group ID.
func (s *finishedStore) hash(id string) uint64 {
	h := maphash.String(s.seed, id)
	if h == 0 { // 0 means "no group" in a slot
		h = 1
	}
	return h
}

// bytes is the memory the store holds: its chunks, slots, heap and
// index.
func (s *finishedStore) bytes() int64 {
	return s.chunkBytes +
		int64(cap(s.slots))*int64(unsafe.Sizeof(finishedSlot{})) +
		int64(cap(s.free)+cap(s.order))*4 +
		int64(len(s.index))*indexEntryBytes
}

// growth is how many bytes more the store will hold once it keeps a
// record of n bytes: a new chunk if the current one has no room, more
// slots if none is free, and an index entry.
func (s *finishedStore) growth(n int) int64 {
	extra := int64(indexEntryBytes)
	if s.cur < 0 || len(s.chunks[s.cur])+n > cap(s.chunks[s.cur]) {
		extra += int64(max(n, arenaChunk))
	}
	if len(s.free) == 0 && len(s.slots) == cap(s.slots) {
		extra += (s.grownCap() - int64(cap(s.slots))) * (int64(unsafe.Sizeof(finishedSlot{})) + 8)
	}
	return extra
}

// grownCap is how many slots the store makes room for when they are
// all in use.
func (s *finishedStore) grownCap() int64 {
	return int64(cap(s.slots) + cap(s.slots)/4 + 64)
}

// growSlots makes room for more slots, and for as many entries of the
// heap and the free list, so that neither grows on its own.
func (s *finishedStore) growSlots() {
	n := s.grownCap()
	slots := make([]finishedSlot, len(s.slots), n)
	copy(slots, s.slots)
	s.slots = slots
	order := make([]uint32, len(s.order), n)
	copy(order, s.order)
	s.order = order
	free := make([]uint32, len(s.free), n)
	copy(free, s.free)
	s.free = free
}

// find returns the slot of the record with the given ID.
func (s *finishedStore) find(id string) (uint32, bool) {
	i, ok := s.index[s.hash(id)]
	if !ok || !bytes.Equal(s.idOf(i), []byte(id)) {
		return 0, false
	}
	return i, true
}

func (s *finishedStore) idOf(i uint32) []byte {
	slot := &s.slots[i]
	return s.chunks[slot.chunk][slot.off : slot.off+slot.idLen]
}

// doc returns the record's document. Its bytes stay valid after the
// record is removed: chunks are released to the garbage collector, never
// written again.
func (s *finishedStore) doc(i uint32) *statusDoc {
	slot := &s.slots[i]
	chunk := s.chunks[slot.chunk]
	start := slot.off + slot.idLen
	d := &statusDoc{
		head:    chunk[start : start+slot.headLen : start+slot.headLen],
		summary: slot.summary,
	}
	if slot.filesLen > 0 {
		start += slot.headLen
		d.files = chunk[start : start+slot.filesLen : start+slot.filesLen]
	}
	return d
}

// put keeps a finished upload's document until expiresAt, replacing a
// record with the same key, and returns its slot.
func (s *finishedStore) put(id string, d *statusDoc, upstream int, groupHash uint64, expiresAt time.Time) uint32 {
	key := s.hash(id)
	if old, ok := s.index[key]; ok {
		s.remove(old)
	}
	n := len(id) + len(d.head) + len(d.files)
	chunk, off := s.allocate(n)
	buf := s.chunks[chunk][off:off]
	buf = append(buf, id...)
	buf = append(buf, d.head...)
	_ = append(buf, d.files...)

	var i uint32
	if k := len(s.free); k > 0 {
		i = s.free[k-1]
		s.free = s.free[:k-1]
	} else {
		if len(s.slots) == cap(s.slots) {
			s.growSlots()
		}
		s.slots = s.slots[:len(s.slots)+1]
		i = uint32(len(s.slots) - 1)
	}
	s.slots[i] = finishedSlot{
		summary:   d.summary,
		expiresAt: expiresAt.UnixNano(),
		idHash:    key,
		groupHash: groupHash,
		upstream:  int32(upstream),
		chunk:     chunk,
		off:       off,
		idLen:     uint32(len(id)),
		headLen:   uint32(len(d.head)),
		filesLen:  uint32(len(d.files)),
	}
	s.index[key] = i
	s.push(i)
	return i
}

// allocate finds room for n bytes: at the end of the current chunk, in
// a new one, or in one of their own for more than arenaChunk.
func (s *finishedStore) allocate(n int) (chunk, off uint32) {
	if s.cur >= 0 {
		c := s.chunks[s.cur]
		if len(c)+n <= cap(c) {
			s.chunks[s.cur] = c[:len(c)+n]
			s.chunkLive[s.cur] += n
			return uint32(s.cur), uint32(len(c))
		}
	}
	size := max(n, arenaChunk)
	var number int
	if k := len(s.freeChunks); k > 0 {
		number = int(s.freeChunks[k-1])
		s.freeChunks = s.freeChunks[:k-1]
	} else {
		s.chunks = append(s.chunks, nil)
		s.chunkLive = append(s.chunkLive, 0)
		number = len(s.chunks) - 1
	}
	s.chunks[number] = make([]byte, n, size)
	s.chunkLive[number] = n
	s.chunkBytes += int64(size)
	if size == arenaChunk {
		if s.cur >= 0 && s.chunkLive[s.cur] == 0 {
			s.release(s.cur)
		}
		s.cur = number
	}
	return uint32(number), 0
}

// release lets the garbage collector have a chunk no record uses.
func (s *finishedStore) release(chunk int) {
	s.chunkBytes -= int64(cap(s.chunks[chunk]))
	s.chunks[chunk] = nil
	s.freeChunks = append(s.freeChunks, uint32(chunk))
	if s.cur == chunk {
		s.cur = -1
	}
}

// remove forgets the record in slot i.
func (s *finishedStore) remove(i uint32) {
	slot := &s.slots[i]
	delete(s.index, slot.idHash)
	s.popAt(int(slot.heapIndex))
	c := int(slot.chunk)
	s.chunkLive[c] -= int(slot.idLen + slot.headLen + slot.filesLen)
	if s.chunkLive[c] == 0 && c != s.cur {
		s.release(c)
	}
	*slot = finishedSlot{}
	s.free = append(s.free, i)
}

// Len is the number of records.
func (s *finishedStore) Len() int { return len(s.order) }

// oldest returns the slot that expires first.
func (s *finishedStore) oldest() (uint32, bool) {
	if len(s.order) == 0 {
		return 0, false
	}
	return s.order[0], true
}

// The expiry heap, by hand rather than through container/heap, so that
// no slot number is boxed in an interface.

func (s *finishedStore) less(a, b int) bool {
	return s.slots[s.order[a]].expiresAt < s.slots[s.order[b]].expiresAt
}

func (s *finishedStore) swap(a, b int) {
	s.order[a], s.order[b] = s.order[b], s.order[a]
	s.slots[s.order[a]].heapIndex = int32(a)
	s.slots[s.order[b]].heapIndex = int32(b)
}

func (s *finishedStore) push(i uint32) {
	s.order = append(s.order, i)
	s.slots[i].heapIndex = int32(len(s.order) - 1)
	s.up(len(s.order) - 1)
}

func (s *finishedStore) popAt(at int) {
	last := len(s.order) - 1
	if at != last {
		s.swap(at, last)
	}
	s.order = s.order[:last]
	if at != last {
		if !s.down(at) {
			s.up(at)
		}
	}
}

func (s *finishedStore) up(j int) {
	for j > 0 {
		parent := (j - 1) / 2
		if !s.less(j, parent) {
			return
		}
		s.swap(j, parent)
		j = parent
	}
}

func (s *finishedStore) down(i int) bool {
	start := i
	n := len(s.order)
	for {
		left := 2*i + 1
		if left >= n {
			break
		}
		j := left
		if right := left + 1; right < n && s.less(right, left) {
			j = right
		}
		if !s.less(j, i) {
			break
		}
		s.swap(i, j)
		i = j
	}
	return i > start
}
