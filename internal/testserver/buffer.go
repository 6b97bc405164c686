package testserver

import (
	"bytes"
	"sync"
)

// Buffer collects a process's or daemon's output for assertions and failure
// messages; unlike bytes.Buffer it is safe for a writer and a reader at once.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
