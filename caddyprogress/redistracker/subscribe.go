package redistracker

import (
	"bytes"
	"context"
	"strconv"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Subscriptions: one Redis pub/sub connection per tracker carries the
// channels of every upload and group that a local subscriber follows;
// a channel is subscribed when its first local subscriber comes and
// unsubscribed when its last one goes. go-redis reconnects the
// connection and subscribes again after a failure; what was published
// meanwhile is lost, so after a reconnection each channel's subscribers
// get the current documents, looked up (a final one included).

// maxQueued bounds what a slow subscriber may have waiting; past it the
// oldest progress document is dropped (a final one never is).
const maxQueued = 64

// receiveBuffer is the buffer between go-redis's reader and the mux.
const receiveBuffer = 1024

// mux fans the messages of the tracker's one pub/sub connection out to
// its local subscribers.
type mux struct {
	t    *Tracker
	ps   *redis.PubSub
	msgs <-chan any

	ops sync.Mutex // orders subscribe and unsubscribe commands with the topics map

	mu     sync.Mutex
	topics map[string]*topic   // by channel
	stale  map[string]struct{} // channels subscribed again after a reconnection
	resync chan struct{}       // wakes resyncLoop
}

// topic is one channel's local subscribers.
type topic struct {
	id, group string // what the channel carries: one upload, or a group
	subs      map[*Subscription]struct{}
	ready     chan struct{} // closed when Redis confirms the subscription
	confirmed bool
}

func newMux(t *Tracker) *mux {
	ps := t.client.Subscribe(context.Background())
	// the watch channel, for good: go-redis subscribes it again after a
	// reconnection, and subscribes it once it connects if Redis is down
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	_ = ps.Subscribe(ctx, t.keys.watch())
	cancel()
	return &mux{
		t:      t,
		ps:     ps,
		msgs:   ps.ChannelWithSubscriptions(redis.WithChannelSize(receiveBuffer)),
		topics: make(map[string]*topic),
		stale:  make(map[string]struct{}),
		resync: make(chan struct{}, 1),
	}
}

func (m *mux) close() { _ = m.ps.Close() }

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
	s := &Subscription{m: m, channel: channel, notify: make(chan struct{}, 1)}
	m.ops.Lock()
	m.mu.Lock()
	tp, ok := m.topics[channel]
	if !ok {
		tp = &topic{id: id, group: group, subs: make(map[*Subscription]struct{}), ready: make(chan struct{})}
		m.topics[channel] = tp
	}
	tp.subs[s] = struct{}{}
	m.mu.Unlock()
	if !ok {
		m.t.stats.roundTrips.Add(1)
		if err := m.ps.Subscribe(ctx, channel); err != nil {
			m.t.failed(err) // go-redis subscribes again when it reconnects
		}
	}
	m.ops.Unlock()
	select {
	case <-tp.ready:
		return s, nil
	case <-ctx.Done():
		s.Close()
		return nil, ErrUnavailable
	}
}

// unsubscribe removes s, and the channel when s was its last subscriber.
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
	m.mu.Unlock()
	if last {
		ctx, cancel := m.t.requestContext(context.Background())
		defer cancel()
		m.t.stats.roundTrips.Add(1)
		if err := m.ps.Unsubscribe(ctx, s.channel); err != nil {
			m.t.failed(err) // forgotten by go-redis anyway: not subscribed again
		}
	}
}

// receiveLoop hands each message to the subscribers of its channel.
func (m *mux) receiveLoop() {
	for {
		select {
		case <-m.t.stop:
			return
		case msg, ok := <-m.msgs:
			if !ok {
				return
			}
			switch msg := msg.(type) {
			case *redis.Subscription:
				if msg.Kind == "subscribe" {
					m.confirm(msg.Channel)
				}
			case *redis.Message:
				if msg.Channel == m.t.keys.watch() {
					m.t.heardWatch(msg.Payload)
				} else if doc, ok := parseMessage(msg.Payload); ok {
					m.dispatch(msg.Channel, doc)
				}
			}
		}
	}
}

// confirm marks a channel subscribed; a channel confirmed again was
// subscribed again after a reconnection, and is resynchronised.
func (m *mux) confirm(channel string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	tp := m.topics[channel]
	if tp == nil {
		return
	}
	if !tp.confirmed {
		tp.confirmed = true
		close(tp.ready)
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
	return Doc{ID: string(f[2]), Group: string(f[3]), State: State(f[1]), Seq: seq, JSON: body}, true
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
