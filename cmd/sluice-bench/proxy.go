package main

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// proxy is a TCP forwarder between smtp-source and one server under test
// that measures, per message, the time from the client's end of data
// (CRLF.CRLF forwarded to the server) to the server's next final reply
// line (three digits and a space) coming back. It looks at no more than
// that: it does not parse SMTP otherwise, buffers nothing beyond one read,
// and costs the same for every server.
type proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	stats  *proxyStats
	active sync.WaitGroup
	nconn  atomic.Int64
}

// proxyStats is what the proxy saw during one run.
type proxyStats struct {
	latencies  []time.Duration // end of data to final reply, one per answered message
	ok         int             // 250 replies to end of data
	rejected   int             // other replies to end of data
	unanswered int             // end of data forwarded, connection closed before a reply
	dialErrors int             // connections the proxy could not forward
	conns      int
	// errorLines counts the distinct 4xx/5xx reply lines seen in any
	// phase (end of data or not), with their first 120 bytes.
	errorLines map[string]int
}

const maxErrorLines = 20

func (s *proxyStats) addErrorLine(line string, n int) {
	if s.errorLines == nil {
		s.errorLines = map[string]int{}
	}
	if _, ok := s.errorLines[line]; !ok && len(s.errorLines) >= maxErrorLines {
		line = "(other error replies)"
	}
	s.errorLines[line] += n
}

// sortedErrorLines returns the error lines, most frequent first.
func (s *proxyStats) sortedErrorLines() []string {
	var out []string
	for l, n := range s.errorLines {
		out = append(out, strings.TrimSpace(l)+" ×"+itoa(n))
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func newProxy(target string) (*proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proxy{ln: ln, target: target, stats: &proxyStats{}}
	go p.serve()
	return p, nil
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) close() { p.ln.Close() }

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(5 * time.Millisecond)
			continue
		}
		p.active.Add(1)
		p.nconn.Add(1)
		go p.handle(c)
	}
}

// reset starts a new run and returns nothing; take returns the stats of
// the run once its connections are all gone.
func (p *proxy) reset() {
	p.mu.Lock()
	p.stats = &proxyStats{}
	p.mu.Unlock()
}

// take waits (up to timeout) for the connections still open to finish,
// and returns the stats gathered since reset.
func (p *proxy) take(timeout time.Duration) (*proxyStats, bool) {
	done := make(chan struct{})
	go func() { p.active.Wait(); close(done) }()
	drained := true
	select {
	case <-done:
	case <-time.After(timeout):
		drained = false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	p.stats = &proxyStats{}
	return s, drained
}

// connState is shared by the two directions of one connection.
type connState struct {
	mu  sync.Mutex
	eod []time.Time // ends of data forwarded and not yet answered

	// Filled by the server-to-client direction only.
	latencies  []time.Duration
	ok         int
	rejected   int
	errorLines map[string]int
}

func (p *proxy) handle(c net.Conn) {
	defer p.active.Done()
	defer p.nconn.Add(-1)
	s, err := net.DialTimeout("tcp", p.target, 10*time.Second)
	if err != nil {
		c.Close()
		p.mu.Lock()
		p.stats.dialErrors++
		p.stats.conns++
		p.mu.Unlock()
		return
	}
	st := &connState{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		clientToServer(c, s, st)
	}()
	serverToClient(s, c, st)
	<-done
	c.Close()
	s.Close()

	p.mu.Lock()
	ps := p.stats
	ps.conns++
	ps.latencies = append(ps.latencies, st.latencies...)
	ps.ok += st.ok
	ps.rejected += st.rejected
	ps.unanswered += len(st.eod)
	for l, n := range st.errorLines {
		ps.addErrorLine(l, n)
	}
	p.mu.Unlock()
}

var eodSeq = []byte("\r\n.\r\n")

// Buffers are reused: every message is a new connection, and two fresh
// buffers per connection would make the garbage collector a noticeable
// part of the proxy's cost.
var (
	bigBufs   = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
	smallBufs = sync.Pool{New: func() any { b := make([]byte, 4<<10); return &b }}
)

// clientToServer forwards the client's bytes and records the moment each
// end-of-data sequence has been forwarded. The sequence may straddle two
// reads, so the last four bytes of the previous read are kept.
func clientToServer(c, s net.Conn, st *connState) {
	bp := bigBufs.Get().(*[]byte)
	defer bigBufs.Put(bp)
	buf := *bp
	var carry [8]byte
	ncarry := 0
	for {
		n, rerr := c.Read(buf)
		if n > 0 {
			b := buf[:n]
			eods := bytes.Count(b, eodSeq)
			if ncarry > 0 {
				// A sequence that starts in the previous read.
				k := copy(carry[ncarry:], b[:min(len(b), 4)])
				if bytes.Contains(carry[:ncarry+k], eodSeq) {
					eods++
				}
			}
			// Keep the last four bytes seen.
			if len(b) >= 4 {
				ncarry = copy(carry[:], b[len(b)-4:])
			} else {
				all := append(carry[:ncarry:ncarry], b...)
				ncarry = copy(carry[:], all[max(0, len(all)-4):])
			}
			var werr error
			if eods > 0 {
				// Hold the lock across the write so that the reply cannot
				// be matched before the timestamp exists.
				st.mu.Lock()
				_, werr = s.Write(b)
				now := time.Now()
				for range eods {
					st.eod = append(st.eod, now)
				}
				st.mu.Unlock()
			} else {
				_, werr = s.Write(b)
			}
			if werr != nil {
				c.Close()
				s.Close()
				return
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				s.(*net.TCPConn).CloseWrite()
			} else {
				c.Close()
				s.Close()
			}
			return
		}
	}
}

// serverToClient forwards the server's bytes and matches each final reply
// line with the oldest unanswered end of data, if any.
func serverToClient(s, c net.Conn, st *connState) {
	bp := smallBufs.Get().(*[]byte)
	defer smallBufs.Put(bp)
	buf := *bp
	var line [128]byte
	nline := 0
	for {
		n, rerr := s.Read(buf)
		if n > 0 {
			for _, ch := range buf[:n] {
				if nline < len(line) {
					line[nline] = ch
				}
				nline++
				if ch != '\n' {
					continue
				}
				l := line[:min(nline, len(line))]
				nline = 0
				if len(l) < 4 || l[3] != ' ' || !isDigit(l[0]) || !isDigit(l[1]) || !isDigit(l[2]) {
					continue
				}
				code := int(l[0]-'0')*100 + int(l[1]-'0')*10 + int(l[2]-'0')
				st.mu.Lock()
				if len(st.eod) > 0 {
					lat := time.Since(st.eod[0])
					st.eod = st.eod[1:]
					st.latencies = append(st.latencies, lat)
					if code == 250 {
						st.ok++
					} else {
						st.rejected++
					}
				}
				st.mu.Unlock()
				if code >= 400 {
					if st.errorLines == nil {
						st.errorLines = map[string]int{}
					}
					st.errorLines[strings.TrimRight(string(l), "\r\n")]++
				}
			}
			if _, werr := c.Write(buf[:n]); werr != nil {
				c.Close()
				s.Close()
				return
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				c.(*net.TCPConn).CloseWrite()
			} else {
				c.Close()
				s.Close()
			}
			return
		}
	}
}

func isDigit(b byte) bool { return b >= '0' && b <= '9' }

// percentile returns the nearest-rank percentile p (0..100) of sorted.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p/100+0.999999) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i]
}
