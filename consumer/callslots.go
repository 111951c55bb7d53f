package consumer

import (
	"context"
	"sync"
)

// callSlots bounds an ordered route's calls by what route health allows
// (AIMD cuts the limit on a 429): an ordered event is retried in place,
// not naked, so the pull loop's in-flight limit does not bound its calls.
type callSlots struct {
	max   int
	limit func() int

	mu    sync.Mutex    // guards n and freed
	n     int           // calls under way
	freed chan struct{} // closed and replaced when a call ends
}

// take waits until a call may be made; it returns the function that ends
// the call, or ctx's error.
func (c *callSlots) take(ctx context.Context) (func(), error) {
	for {
		limit := max(1, min(c.max, c.limit()))
		c.mu.Lock()
		if c.n < limit {
			c.n++
			c.mu.Unlock()
			return c.end, nil
		}
		// The limit only grows on a success, which ends a call: waiting
		// for a call to end is enough.
		freed := c.freed
		c.mu.Unlock()
		select {
		case <-freed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (c *callSlots) end() {
	c.mu.Lock()
	c.n--
	close(c.freed)
	c.freed = make(chan struct{})
	c.mu.Unlock()
}
