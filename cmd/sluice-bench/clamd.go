package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sluice-mail/sluice/plugins/clamav/clamdtest"
)

// The clamd under test is the one plugins/clamav/clamdtest starts for the
// clamav plugin's tests, started here with clamdtest.Run: the same
// clamd.conf (but for MaxThreads) and the same three-signature database.

// clamdServer is that clamd, with its VmRSS sampled.
type clamdServer struct {
	*clamdtest.Clamd
	addr       string // host:port of its TCP socket
	maxThreads int
	rss        *rssSampler
	stopped    bool
}

// startClamd starts clamdtest's clamd in dir with maxThreads scanning
// threads; it returns once clamd answers PING. The caller stops it, also
// after an error.
func startClamd(ctx context.Context, dir string, maxThreads int) (*clamdServer, error) {
	cd, err := clamdtest.Run(dir, clamdtest.Options{MaxThreads: maxThreads})
	if err != nil {
		return nil, err
	}
	c := &clamdServer{Clamd: cd, addr: strings.TrimPrefix(cd.Addr, "tcp://"), maxThreads: maxThreads}
	pid := cd.Pid()
	c.rss = startRSSSampler(100*time.Millisecond, false, func() (int64, int) {
		kb, err := vmRSS(pid)
		if err != nil {
			return 0, 0
		}
		return kb, 1
	})
	// Run does not watch ctx: an interrupt while clamd started ends the
	// sections here.
	return c, ctx.Err()
}

// alive reports whether clamd is still running.
func (c *clamdServer) alive() bool { return c.Exited() == nil }

// stop sends SIGTERM and waits for clamd to exit (SIGKILL after 10s).
func (c *clamdServer) stop() error {
	if c == nil {
		return nil
	}
	if c.rss != nil {
		c.rss.stop()
	}
	if c.Clamd == nil || c.stopped {
		return nil
	}
	c.stopped = true
	if st := c.Exited(); st != nil {
		return fmt.Errorf("clamd had exited: %v\n%s", st, tailFile(c.LogFile, 10))
	}
	c.Stop()
	if ws, ok := c.Exited().Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
		return errors.New("clamd did not stop within 10s of SIGTERM; killed")
	}
	return nil
}

// clamdScan sends msg to clamd with INSTREAM on a new connection, as the
// clamav plugin does (chunks of at most 64 KiB), and returns the answer
// without its NUL.
func clamdScan(addr string, msg []byte) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	w := bufio.NewWriterSize(conn, 64<<10+16)
	w.WriteString("zINSTREAM\x00")
	var n [4]byte
	for rest := msg; len(rest) > 0; {
		chunk := rest[:min(len(rest), 64<<10)]
		rest = rest[len(chunk):]
		binary.BigEndian.PutUint32(n[:], uint32(len(chunk)))
		w.Write(n[:])
		w.Write(chunk)
	}
	binary.BigEndian.PutUint32(n[:], 0)
	w.Write(n[:])
	if err := w.Flush(); err != nil {
		return "", err
	}
	got, err := bufio.NewReader(io.LimitReader(conn, 4096)).ReadString(0)
	if err != nil {
		return "", fmt.Errorf("reading the answer: %q, %v", got, err)
	}
	return strings.TrimSuffix(got, "\x00"), nil
}

// directScan is clamd fed directly.
type directScan struct {
	conns    int
	scans    int
	errors   int
	wall     time.Duration
	p50, p99 time.Duration
	cpuMS    float64 // machine CPU per scan, ms
	peakKB   int64   // clamd's VmRSS
	answers  map[string]int
	problems []string
}

func (d *directScan) rate() float64 {
	if d.wall <= 0 {
		return 0
	}
	return float64(d.scans) / d.wall.Seconds()
}

// scanDirect scans msg over and over on conns parallel connections for
// about dur (each connection finishes the scan it is in) and counts the
// clean answers; any other answer is an error.
func scanDirect(ctx context.Context, c *clamdServer, msg []byte, conns int, dur time.Duration) *directScan {
	d := &directScan{conns: conns, answers: map[string]int{}}
	// One scan first, to see it works at all.
	if ans, err := clamdScan(c.addr, msg); err != nil || ans != "stream: OK" {
		d.problems = append(d.problems, fmt.Sprintf("first scan: %q, %v", ans, err))
		return d
	}
	c.rss.reset()
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	busy0 := machineBusy()
	start := time.Now()
	end := start.Add(dur)
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			answers := map[string]int{}
			errs := 0
			for time.Now().Before(end) && ctx.Err() == nil {
				t := time.Now()
				ans, err := clamdScan(c.addr, msg)
				switch {
				case err != nil:
					errs++
					answers["error: "+err.Error()]++
				case ans != "stream: OK":
					errs++
					answers[ans]++
				default:
					mine = append(mine, time.Since(t))
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			d.errors += errs
			for a, n := range answers {
				if len(d.answers) < 10 {
					d.answers[a] += n
				}
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	d.wall = time.Since(start)
	d.scans = len(lat)
	if d.scans > 0 {
		d.cpuMS = (machineBusy() - busy0).Seconds() * 1000 / float64(d.scans)
	}
	d.peakKB, _ = c.rss.peak()
	slices.Sort(lat)
	d.p50, d.p99 = percentile(lat, 50), percentile(lat, 99)
	if ctx.Err() != nil {
		d.problems = append(d.problems, "interrupted")
	}
	if d.errors > 0 {
		var a []string
		for k, n := range d.answers {
			a = append(a, fmt.Sprintf("%q ×%d", k, n))
		}
		slices.Sort(a)
		d.problems = append(d.problems, fmt.Sprintf("%d scans did not answer \"stream: OK\": %s", d.errors, strings.Join(a, "; ")))
	}
	return d
}

// captureMessage runs smtp-source for one message of size bytes against
// a sink in this process and returns the message as Sluice would hand it
// to a filter: a Received header like Sluice's on top of what smtp-source
// sent in DATA (the dot-stuffing undone). smtp-source's messages differ
// from one another only in Date and Message-Id.
func captureMessage(ctx context.Context, size int) ([]byte, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	type got struct {
		msg []byte
		err error
	}
	ch := make(chan got, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			ch <- got{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		r := bufio.NewReader(c)
		fmt.Fprintf(c, "220 sink ESMTP\r\n")
		var msg bytes.Buffer
		inData := false
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				ch <- got{msg: msg.Bytes(), err: fmt.Errorf("the sink read: %v", err)}
				return
			}
			switch {
			case inData && line == ".\r\n":
				inData = false
				fmt.Fprintf(c, "250 2.0.0 Ok\r\n")
			case inData:
				msg.WriteString(strings.TrimPrefix(line, "."))
			case strings.HasPrefix(strings.ToUpper(line), "DATA"):
				inData = true
				fmt.Fprintf(c, "354 go on\r\n")
			case strings.HasPrefix(strings.ToUpper(line), "QUIT"):
				fmt.Fprintf(c, "221 bye\r\n")
				ch <- got{msg: msg.Bytes()}
				return
			default:
				fmt.Fprintf(c, "250 ok\r\n")
			}
		}
	}()
	cmd := exec.CommandContext(ctx, smtpSource, "-s", "1", "-l", strconv.Itoa(size), "-m", "1", "-f", sender, "-t", recipient, ln.Addr().String())
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("smtp-source: %v: %s", err, out)
	}
	var g got
	select {
	case g = <-ch:
	case <-time.After(10 * time.Second):
		return nil, errors.New("the sink got no message from smtp-source")
	}
	if g.err != nil {
		return nil, g.err
	}
	if len(g.msg) < size {
		return nil, fmt.Errorf("smtp-source sent %d bytes, fewer than %d", len(g.msg), size)
	}
	helo, _ := os.Hostname() // smtp-source says HELO with it
	received := fmt.Sprintf("Received: from %s ([127.0.0.1])\r\n\tby bench.local (Sluice) with ESMTP id 01JBENCHBENCHBENCHBENCHBENC\r\n\tfor <%s>;\r\n\t%s\r\n", helo, recipient, time.Now().Format(time.RFC1123Z))
	return append([]byte(received), g.msg...), nil
}
