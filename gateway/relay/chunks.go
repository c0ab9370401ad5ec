package relay

import "sync"

const chunkSize = 16 << 10

var chunkPool = sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}

// chunks is a FIFO of bytes in pooled 16 KiB blocks: the data a window holds back.
// It only ever holds what a peer was allowed to send, so it needs no cap of its own.
type chunks struct {
	bufs []*[]byte
	head int // read offset in bufs[0]
	tail int // write offset in the last buf
	n    int
}

func (c *chunks) len() int { return c.n }

func (c *chunks) write(p []byte) {
	for len(p) > 0 {
		if len(c.bufs) == 0 || c.tail == chunkSize {
			c.bufs = append(c.bufs, chunkPool.Get().(*[]byte))
			c.tail = 0
		}
		k := copy((*c.bufs[len(c.bufs)-1])[c.tail:], p)
		c.tail += k
		c.n += k
		p = p[k:]
	}
}

// peek returns up to max bytes from the front without consuming them.
func (c *chunks) peek(max int) []byte {
	if c.n == 0 {
		return nil
	}
	end := chunkSize
	if len(c.bufs) == 1 {
		end = c.tail
	}
	b := (*c.bufs[0])[c.head:end]
	if len(b) > max {
		b = b[:max]
	}
	return b
}

func (c *chunks) consume(n int) {
	c.n -= n
	c.head += n
	for len(c.bufs) > 0 {
		end := chunkSize
		if len(c.bufs) == 1 {
			end = c.tail
		}
		if c.head < end {
			break
		}
		c.head -= end
		chunkPool.Put(c.bufs[0])
		c.bufs[0] = nil
		c.bufs = c.bufs[1:]
	}
	if len(c.bufs) == 0 {
		c.bufs, c.head, c.tail = nil, 0, 0
	}
}

// all returns the queued bytes as slices into the queue, front to back.
func (c *chunks) all() [][]byte {
	out := make([][]byte, 0, len(c.bufs))
	for i, b := range c.bufs {
		lo, hi := 0, chunkSize
		if i == 0 {
			lo = c.head
		}
		if i == len(c.bufs)-1 {
			hi = c.tail
		}
		out = append(out, (*b)[lo:hi])
	}
	return out
}

func (c *chunks) reset() {
	for _, b := range c.bufs {
		chunkPool.Put(b)
	}
	c.bufs, c.head, c.tail, c.n = nil, 0, 0, 0
}
