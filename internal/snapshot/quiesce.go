package snapshot

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

// Quiescer is what --quiesce pauses: the local dispatcher.
type Quiescer interface {
	// Pause stops new jobs from starting; running ones go on.
	Pause()
	// Resume lets jobs start again.
	Resume()
	// WaitIdle returns once no job runs, or ctx's error.
	WaitIdle(ctx context.Context) error
}

// MaxQuiesce bounds how long a pipeline stays paused for one client: a
// client that hangs cannot stop it for longer.
const MaxQuiesce = time.Hour

// QuiesceServer serves the quiesce protocol on a unix socket that only the
// data dir's owner can reach (mode 0600). A client sends "quiesce
// <timeout>\n"; the server pauses, waits up to timeout for running jobs and
// answers "paused\n" (or "error <why>\n", resuming). The pipeline stays
// paused until the client sends anything more or closes the connection -
// dying included - or MaxQuiesce passes.
type QuiesceServer struct {
	ln  net.Listener
	q   Quiescer
	wg  sync.WaitGroup
	mu  sync.Mutex
	act int // paused clients
}

// ListenQuiesce removes a stale socket at path and serves on it.
func ListenQuiesce(path string, q Quiescer) (*QuiesceServer, error) {
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	s := &QuiesceServer{ln: ln, q: q}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

func (s *QuiesceServer) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.handle(c) }()
	}
}

func (s *QuiesceServer) handle(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(MaxQuiesce))
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return
	}
	verb, arg, _ := strings.Cut(strings.TrimSpace(line), " ")
	if verb != "quiesce" {
		fmt.Fprintf(c, "error unknown request %q\n", verb)
		return
	}
	timeout, err := time.ParseDuration(arg)
	if err != nil || timeout <= 0 {
		timeout = 5 * time.Minute
	}
	s.pause()
	defer s.resume()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	err = s.q.WaitIdle(ctx)
	cancel()
	if err != nil {
		fmt.Fprintf(c, "error running jobs did not finish within %s\n", timeout)
		return
	}
	fmt.Fprintln(c, "paused")
	r.ReadString('\n') // until the client is done or gone
}

func (s *QuiesceServer) pause() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.act == 0 {
		s.q.Pause()
	}
	s.act++
}

func (s *QuiesceServer) resume() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.act--
	if s.act == 0 {
		s.q.Resume()
	}
}

// Close stops serving; paused clients are released.
func (s *QuiesceServer) Close() error {
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

// ErrNoPipeline is returned by RequestQuiesce when no `conveyor up` serves
// the socket.
var ErrNoPipeline = errors.New("no running conveyor up to quiesce")

// RequestQuiesce pauses the pipeline serving the socket at path, waiting
// up to timeout for its running jobs. It returns the function that resumes
// it.
func RequestQuiesce(ctx context.Context, path string, timeout time.Duration) (resume func(), err error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoPipeline, err)
	}
	if _, err := fmt.Fprintf(c, "quiesce %s\n", timeout); err != nil {
		c.Close()
		return nil, err
	}
	c.SetReadDeadline(time.Now().Add(timeout + 10*time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("quiesce: %w", err)
	}
	if line = strings.TrimSpace(line); line != "paused" {
		c.Close()
		return nil, fmt.Errorf("quiesce: %s", strings.TrimPrefix(line, "error "))
	}
	return func() { fmt.Fprintln(c, "resume"); c.Close() }, nil
}
