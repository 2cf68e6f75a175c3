package runner

import (
	"container/heap"
	"time"
)

// schedule is the in-memory plan of which queued message is due when: an ID
// and a time per message, so a large queue costs little memory. Entries are
// never removed from the heap; a popped entry whose time no longer matches
// due[id] is stale and skipped.
type schedule struct {
	heap     entries
	due      map[string]time.Time // every message known, by ID
	inflight map[string]bool
}

type entry struct {
	id  string
	due time.Time
}

type entries []entry

func (e entries) Len() int           { return len(e) }
func (e entries) Less(i, j int) bool { return e[i].due.Before(e[j].due) }
func (e entries) Swap(i, j int)      { e[i], e[j] = e[j], e[i] }
func (e *entries) Push(x any)        { *e = append(*e, x.(entry)) }
func (e *entries) Pop() any {
	old := *e
	x := old[len(old)-1]
	*e = old[:len(old)-1]
	return x
}

func newSchedule() *schedule {
	return &schedule{due: map[string]time.Time{}, inflight: map[string]bool{}}
}

// add plans id for t, unless it is being delivered right now (the attempt
// reschedules it when done).
func (s *schedule) add(id string, t time.Time) {
	if s.inflight[id] {
		return
	}
	if old, ok := s.due[id]; ok && old.Equal(t) {
		return
	}
	s.due[id] = t
	heap.Push(&s.heap, entry{id, t})
}

// known reports whether id is planned or in flight.
func (s *schedule) known(id string) bool {
	_, ok := s.due[id]
	return ok || s.inflight[id]
}

// next returns the earliest planned message, dropping stale entries.
func (s *schedule) next() (entry, bool) {
	for len(s.heap) > 0 {
		e := s.heap[0]
		if t, ok := s.due[e.id]; ok && t.Equal(e.due) {
			return e, true
		}
		heap.Pop(&s.heap)
	}
	return entry{}, false
}

// take marks the earliest message in flight and returns it.
func (s *schedule) take() string {
	e := heap.Pop(&s.heap).(entry)
	delete(s.due, e.id)
	s.inflight[e.id] = true
	return e.id
}

// finish ends an attempt; the message is planned again at t unless it left
// the queue (zero t).
func (s *schedule) finish(id string, t time.Time) {
	delete(s.inflight, id)
	if !t.IsZero() {
		s.add(id, t)
	}
}

func (s *schedule) len() int { return len(s.due) + len(s.inflight) }
