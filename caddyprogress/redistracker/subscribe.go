package redistracker

import (
	"bytes"
	"context"
	"strconv"
	"sync"

	"github.com/caddy-upload-progress/caddy-upload-progress/caddyprogress/progress"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Subscriptions: one Redis pub/sub connection per tracker carries the
// channels of every upload and group that a local subscriber follows,
// and the tracker's watch channel while uploads run here (idle.go); a
// channel is subscribed when its first local subscriber comes and
// unsubscribed when its last one goes. The connection is opened for the
// first channel and closed with the last, so that an idle tracker holds
// none (go-redis pings an open one every 3s without traffic). go-redis
// reconnects the connection and subscribes again after a failure; what
// was published meanwhile is lost, so after a reconnection each
// channel's subscribers get the current documents, looked up (a final
// one included).

// maxQueued bounds what a slow subscriber may have waiting; past it the
// oldest progress document is dropped (a final one never is).
const maxQueued = 64

// receiveBuffer is the buffer between go-redis's reader and the mux.
const receiveBuffer = 1024

// mux fans the messages of the tracker's pub/sub connection out to its
// local subscribers.
type mux struct {
	t         *Tracker
	receivers sync.WaitGroup // one receive goroutine per connection opened

	ops    sync.Mutex // orders subscribe and unsubscribe commands, opening and closing, with the topics map
	closed bool       // under ops

	mu     sync.Mutex
	ps     *redis.PubSub       // the connection while a channel is subscribed, else nil; set under ops and mu
	topics map[string]*topic   // by channel
	stale  map[string]struct{} // channels subscribed again after a reconnection
	resync chan struct{}       // wakes resyncLoop
}

// topic is one channel's local subscribers.
type topic struct {
	id, group string // what the channel carries: one upload, or a group ("" and "": the watch channel)
	subs      map[*Subscription]struct{}
	ready     chan struct{} // closed when Redis confirms the subscription
	confirmed bool
}

func newMux(t *Tracker) *mux {
	return &mux{
		t:      t,
		topics: make(map[string]*topic),
		stale:  make(map[string]struct{}),
		resync: make(chan struct{}, 1),
	}
}

// close closes the connection, if open, and waits for its receiver.
func (m *mux) close() {
	m.ops.Lock()
	m.closed = true
	m.closeConn()
	m.ops.Unlock()
	m.receivers.Wait()
}

// open opens the pub/sub connection and starts its receiver; under ops.
func (m *mux) open() *redis.PubSub {
	ps := m.t.client.Subscribe(context.Background())
	msgs := ps.ChannelWithSubscriptions(redis.WithChannelSize(receiveBuffer))
	m.mu.Lock()
	m.ps = ps
	m.mu.Unlock()
	m.receivers.Add(1)
	go m.receive(ps, msgs)
	return ps
}

// closeConn closes the pub/sub connection, if open; under ops.
func (m *mux) closeConn() {
	m.mu.Lock()
	ps := m.ps
	m.ps = nil
	m.mu.Unlock()
	if ps != nil {
		_ = ps.Close() // its receiver ends when go-redis closes the channel
	}
}

// followers reports whether a local subscriber follows an upload or a
// group (the watch channel does not count).
func (m *mux) followers() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := len(m.topics)
	if _, ok := m.topics[m.t.keys.watch()]; ok {
		n--
	}
	return n > 0
}

// Subscribe follows the documents of one upload, published on any
// instance, from the moment Redis confirms the subscription (within
// Timeout, or ErrUnavailable): a subscriber that then looks the upload
// up misses nothing.
func (t *Tracker) Subscribe(ctx context.Context, id string) (*Subscription, error) {
	if err := validateID("upload", id); err != nil {
		return nil, err
	}
	return t.subs.subscribe(ctx, t.keys.uploadChannel(id), id, "")
}

// SubscribeGroup follows the documents of every member of a group.
func (t *Tracker) SubscribeGroup(ctx context.Context, group string) (*Subscription, error) {
	if err := validateID("group", group); err != nil {
		return nil, err
	}
	return t.subs.subscribe(ctx, t.keys.groupChannel(group), "", group)
}

func (m *mux) subscribe(ctx context.Context, channel, id, group string) (*Subscription, error) {
	if err := m.t.usable(); err != nil {
		return nil, err
	}
	ctx, cancel := m.t.requestContext(ctx)
	defer cancel()
	s, tp, err := m.join(ctx, channel, id, group)
	if err != nil {
		return nil, err
	}
	select {
	case <-tp.ready:
		return s, nil
	case <-ctx.Done():
		s.Close()
		return nil, ErrUnavailable
	}
}

// join adds a subscriber to channel, subscribing it (and opening the
// connection) for the first; it does not wait for Redis to confirm (the
// topic's ready). If Redis cannot be reached, go-redis subscribes the
// channel when it reconnects.
func (m *mux) join(ctx context.Context, channel, id, group string) (*Subscription, *topic, error) {
	s := &Subscription{m: m, channel: channel, notify: make(chan struct{}, 1)}
	m.ops.Lock()
	defer m.ops.Unlock()
	if m.closed {
		return nil, nil, ErrClosed
	}
	m.mu.Lock()
	tp, ok := m.topics[channel]
	if !ok {
		tp = &topic{id: id, group: group, subs: make(map[*Subscription]struct{}), ready: make(chan struct{})}
		m.topics[channel] = tp
	}
	tp.subs[s] = struct{}{}
	ps := m.ps
	m.mu.Unlock()
	if !ok {
		if ps == nil {
			ps = m.open()
		}
		m.t.stats.roundTrips.Add(1)
		if err := ps.Subscribe(ctx, channel); err != nil {
			m.t.failedIn(ctx, err) // go-redis subscribes again when it reconnects
		}
	}
	return s, tp, nil
}

// unsubscribe removes s, and the channel when s was its last subscriber;
// the connection closes with its last channel.
func (m *mux) unsubscribe(s *Subscription) {
	m.ops.Lock()
	defer m.ops.Unlock()
	m.mu.Lock()
	tp := m.topics[s.channel]
	if tp == nil {
		m.mu.Unlock()
		return
	}
	delete(tp.subs, s)
	last := len(tp.subs) == 0
	if last {
		delete(m.topics, s.channel)
	}
	none := len(m.topics) == 0
	ps := m.ps
	m.mu.Unlock()
	switch {
	case !last || ps == nil:
	case none: // nothing subscribed: no connection, so no pings either
		m.closeConn()
	default:
		ctx, cancel := m.t.requestContext(context.Background())
		defer cancel()
		m.t.stats.roundTrips.Add(1)
		if err := ps.Unsubscribe(ctx, s.channel); err != nil {
			m.t.failedIn(ctx, err) // forgotten by go-redis anyway: not subscribed again
		}
	}
}

// receive hands each message of the connection ps to the subscribers of
// its channel, until ps is closed.
func (m *mux) receive(ps *redis.PubSub, msgs <-chan any) {
	defer m.receivers.Done()
	for msg := range msgs {
		m.handle(ps, msg)
	}
}

// handle hands one message over; a panic is logged and the message
// dropped, so that the connection's next messages still go.
func (m *mux) handle(ps *redis.PubSub, msg any) {
	defer func() {
		if v := recover(); v != nil {
			m.t.log.Error("panic handling a redis pub/sub message; message dropped",
				zap.Any("panic", v), zap.Stack("stack"))
		}
	}()
	switch msg := msg.(type) {
	case *redis.Subscription:
		if msg.Kind == "subscribe" {
			m.confirm(ps, msg.Channel)
		}
	case *redis.Message:
		if msg.Channel == m.t.keys.watch() {
			m.t.heardWatch(msg.Payload)
		} else if doc, ok := parseMessage(msg.Payload); ok {
			m.dispatch(msg.Channel, doc)
		}
	}
}

// confirm marks a channel subscribed on the connection ps; a channel
// confirmed again was subscribed again after a reconnection, and is
// resynchronised (the watch channel carries no documents: it is not).
// A confirmation from a connection closed since is ignored.
func (m *mux) confirm(ps *redis.PubSub, channel string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	tp := m.topics[channel]
	if tp == nil || m.ps != ps {
		return
	}
	if !tp.confirmed {
		tp.confirmed = true
		close(tp.ready)
		return
	}
	if tp.id == "" && tp.group == "" {
		return
	}
	m.stale[channel] = struct{}{}
	select {
	case m.resync <- struct{}{}:
	default:
	}
}

// resyncLoop hands the subscribers of channels subscribed again the
// current documents, one lookup per channel.
func (m *mux) resyncLoop() {
	for {
		select {
		case <-m.t.stop:
			return
		case <-m.resync:
		}
		m.mu.Lock()
		var topics []*topic
		var channels []string
		for channel := range m.stale {
			if tp := m.topics[channel]; tp != nil {
				topics = append(topics, tp)
				channels = append(channels, channel)
			}
		}
		clear(m.stale)
		m.mu.Unlock()
		for i, tp := range topics {
			ctx, cancel := context.WithTimeout(context.Background(), backgroundTimeout)
			var docs []Doc
			if tp.id != "" {
				if d, err := m.t.Lookup(ctx, tp.id); err == nil {
					docs = []Doc{d}
				}
			} else {
				docs, _ = m.t.LookupGroup(ctx, tp.group)
			}
			cancel()
			for _, d := range docs {
				m.dispatch(channels[i], d)
			}
		}
	}
}

func (m *mux) dispatch(channel string, doc Doc) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if tp := m.topics[channel]; tp != nil {
		for s := range tp.subs {
			s.deliver(doc)
		}
	}
}

// parseMessage reads "<seq> <state> <id> <group>\n<doc>".
func parseMessage(payload string) (Doc, bool) {
	head, body, ok := bytes.Cut([]byte(payload), []byte{'\n'})
	if !ok {
		return Doc{}, false
	}
	f := bytes.SplitN(head, []byte{' '}, 4)
	if len(f) != 4 {
		return Doc{}, false
	}
	seq, err := strconv.ParseInt(string(f[0]), 10, 64)
	if err != nil {
		return Doc{}, false
	}
	return Doc{ID: string(f[2]), Group: string(f[3]), State: progress.NamedState(string(f[1])), Seq: seq, JSON: body}, true
}

// Subscription is one local subscriber's queue of documents.
type Subscription struct {
	m       *mux
	channel string
	notify  chan struct{}

	mu     sync.Mutex
	queue  []Doc
	closed bool
}

// Notify is signalled when documents are waiting for Take.
func (s *Subscription) Notify() <-chan struct{} { return s.notify }

// Take returns the documents received since the last Take, oldest first.
func (s *Subscription) Take() []Doc {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queue
	s.queue = nil
	return q
}

// Close ends the subscription.
func (s *Subscription) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.queue = nil
	s.mu.Unlock()
	s.m.unsubscribe(s)
}

// deliver queues doc, dropping the oldest progress document when full.
func (s *Subscription) deliver(doc Doc) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	if len(s.queue) >= maxQueued {
		for i, d := range s.queue {
			if !d.Final() {
				s.queue = append(s.queue[:i], s.queue[i+1:]...)
				break
			}
		}
	}
	s.queue = append(s.queue, doc)
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
}
