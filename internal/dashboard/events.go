package dashboard

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// hub fans job changes out to the open live streams. Changes are
// coalesced per subscriber: a slow browser gets fewer, larger messages,
// and never slows the pipeline down.
type hub struct {
	mu     sync.Mutex
	subs   map[*sub]struct{}
	closed bool
}

type sub struct {
	mu   sync.Mutex
	ids  map[string]struct{}
	all  bool // too many to name: "something changed"
	wake chan struct{}
	done chan struct{}
}

const maxNamedChanges = 200

func newHub() *hub { return &hub{subs: map[*sub]struct{}{}} }

func (h *hub) subscribe() *sub {
	s := &sub{ids: map[string]struct{}{}, wake: make(chan struct{}, 1), done: make(chan struct{})}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		close(s.done)
		return s
	}
	h.subs[s] = struct{}{}
	return s
}

func (h *hub) unsubscribe(s *sub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[s]; ok {
		delete(h.subs, s)
		close(s.done)
	}
}

// publish tells every subscriber that job id changed ("" for the list as
// a whole).
func (h *hub) publish(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		s.mu.Lock()
		if id == "" || len(s.ids) >= maxNamedChanges {
			s.all = true
		} else {
			s.ids[id] = struct{}{}
		}
		s.mu.Unlock()
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for s := range h.subs {
		delete(h.subs, s)
		close(s.done)
	}
}

// take returns and clears the pending changes.
func (s *sub) take() (ids []string, all bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id := range s.ids {
		ids = append(ids, id)
	}
	clear(s.ids)
	all, s.all = s.all, false
	return ids, all
}

// changeEvent is the data of one "change" event.
type changeEvent struct {
	IDs    []string       `json:"ids"`
	All    bool           `json:"all"`
	Counts map[string]int `json:"counts"`
	Total  int            `json:"total"`
	Ready  bool           `json:"ready"`
}

// Coalescing window of the live stream and its keep-alive period.
const (
	streamEvery     = 250 * time.Millisecond
	streamKeepAlive = 15 * time.Second
)

// handleEvents is the live stream (server-sent events): one "change"
// event per burst of changes, naming the jobs that changed.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	sb := s.hub.subscribe()
	defer s.hub.unsubscribe(sb)
	// The first event carries the counts, so a page opened during a burst
	// is never stale.
	s.hub.publish("")
	fmt.Fprint(w, "retry: 2000\n\n")
	fl.Flush()
	keep := time.NewTicker(streamKeepAlive)
	defer keep.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-sb.done:
			return
		case <-keep.C:
			fmt.Fprint(w, ": keep-alive\n\n")
			fl.Flush()
		case <-sb.wake:
			ids, all := sb.take()
			p := s.index.Query(Query{Size: 1})
			ev := changeEvent{IDs: ids, All: all, Counts: countsJSON(p), Total: p.All, Ready: p.Ready}
			if ev.IDs == nil {
				ev.IDs = []string{}
			}
			b, _ := json.Marshal(ev)
			fmt.Fprintf(w, "event: change\ndata: %s\n\n", b)
			fl.Flush()
			// Coalesce what arrives in the next moment into one event.
			t := time.NewTimer(streamEvery)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			case <-sb.done:
				t.Stop()
				return
			}
		}
	}
}
