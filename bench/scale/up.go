package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conveyorhq/conveyor/bench/internal/benchproc"
	"github.com/conveyorhq/conveyor/internal/local"
	"github.com/conveyorhq/conveyor/internal/s3server"
)

// Copied in small from bench/pipeline/up.go (start, stop, peak RSS, clean
// environment, free port) rather than shared: this one also passes
// environment variables, timestamps the lines it watches on both streams
// and reads the CPU time of the process.

// stopTimeout bounds the wait for `conveyor up` to exit after SIGINT.
const stopTimeout = 30 * time.Second

// Bucket names of conveyor's default configuration.
const (
	inputBucket  = "input"
	outputBucket = "output"
	stateBucket  = "state"
	region       = "us-east-1"
)

// upProc is one running `conveyor up`.
type upProc struct {
	bin       string
	dataDir   string
	name      string
	endpoint  string
	dashboard string // "" when off
	stderrLog string
	stdoutLog string
	started   time.Time // just before the process was started
	s3        *s3.Client
	transport *http.Transport
	cmd       *exec.Cmd
	exited    chan struct{}
	waitErr   error

	mu      sync.Mutex
	lines   []stampedLine // watched lines, in arrival order
	newLine chan struct{} // closed (and replaced) when a line arrives
}

// stampedLine is one output line of interest and when it was read.
type stampedLine struct {
	at   time.Time
	text string
}

// watched says which lines are kept for the waits; the logs keep all.
func watched(line string) bool {
	return strings.Contains(line, "conveyor is up") || strings.Contains(line, "reconcile") ||
		strings.Contains(line, "dashboard")
}

// startUp starts `conveyor up` on dataDir (S3 and, unless dashboard is
// false, the dashboard on free loopback ports, processor noop, env added
// to a clean environment) and returns once it printed "conveyor is up"
// (bounded by readyTimeout) and its credentials are readable.
func startUp(ctx context.Context, bin, dataDir, name string, dashboard bool, env []string, readyTimeout time.Duration) (*upProc, error) {
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return nil, err
	}
	port, err := benchproc.FreePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	dash := "off"
	if dashboard {
		dport, err := benchproc.FreePort()
		if err != nil {
			return nil, err
		}
		dash = fmt.Sprintf("127.0.0.1:%d", dport)
	}
	p := &upProc{
		bin: bin, dataDir: dataDir, name: name, endpoint: "http://" + addr,
		stderrLog: filepath.Join(filepath.Dir(dataDir), "conveyor-up-"+name+".stderr.log"),
		stdoutLog: filepath.Join(filepath.Dir(dataDir), "conveyor-up-"+name+".stdout.log"),
		exited:    make(chan struct{}),
		newLine:   make(chan struct{}),
	}
	args := []string{"up", "--data-dir", dataDir, "--s3-addr", addr, "--processor", "noop", "--dashboard-addr", dash}
	// Not CommandContext: stop() ends it with SIGINT, the way a user does.
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(benchproc.CleanEnv(), env...)
	p.cmd.Dir = filepath.Dir(dataDir) // no stray ./conveyor.yaml
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	outf, err := os.Create(p.stdoutLog)
	if err != nil {
		return nil, err
	}
	errf, err := os.Create(p.stderrLog)
	if err != nil {
		outf.Close()
		return nil, err
	}
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		errf.Close()
		outf.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	var streams sync.WaitGroup
	streams.Add(2)
	go func() { defer streams.Done(); p.copyLines(stdout, outf) }()
	go func() { defer streams.Done(); p.copyLines(stderr, errf) }()
	go func() {
		streams.Wait() // Wait closes the pipes: read them to the end first
		p.waitErr = p.cmd.Wait()
		errf.Close()
		outf.Close()
		close(p.exited)
	}()
	if _, err := p.waitLine(ctx, "conveyor is up", readyTimeout); err != nil {
		p.stop()
		return nil, p.failed(err)
	}
	creds, err := local.LoadCredentials(local.Paths{Root: dataDir})
	if err != nil {
		p.stop()
		return nil, p.failed(fmt.Errorf("read credentials: %w", err))
	}
	if dashboard {
		ri, err := local.ReadRunInfo(local.Paths{Root: dataDir})
		if err != nil || ri.Dashboard == "" {
			p.stop()
			return nil, p.failed(fmt.Errorf("no dashboard URL in %s (%v)", local.Paths{Root: dataDir}.RunInfo(), err))
		}
		p.dashboard = ri.Dashboard
	}
	// The SDK's default transport with room for the parallel writers, held
	// here so that stop can close its idle keep-alive connections: the
	// server's shutdown waits for them.
	p.transport = awshttp.NewBuildableClient().GetTransport()
	p.transport.MaxIdleConnsPerHost = 256
	base := s3server.NewClient(p.endpoint, creds.AccessKeyID, creds.SecretAccessKey, region)
	p.s3 = s3.New(base.Options(), func(o *s3.Options) { o.HTTPClient = &http.Client{Transport: p.transport} })
	return p, nil
}

// copyLines writes every line of r to log and keeps the watched ones.
func (p *upProc) copyLines(r io.Reader, log io.Writer) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		now := time.Now()
		fmt.Fprintln(log, sc.Text())
		if !watched(sc.Text()) {
			continue
		}
		p.mu.Lock()
		p.lines = append(p.lines, stampedLine{now, sc.Text()})
		close(p.newLine)
		p.newLine = make(chan struct{})
		p.mu.Unlock()
	}
	io.Copy(io.Discard, r)
}

// waitLine waits, at most timeout, for a watched line containing substr
// and returns it with its time.
func (p *upProc) waitLine(ctx context.Context, substr string, timeout time.Duration) (stampedLine, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		for _, l := range p.lines {
			if strings.Contains(l.text, substr) {
				p.mu.Unlock()
				return l, nil
			}
		}
		changed := p.newLine
		p.mu.Unlock()
		select {
		case <-changed:
		case <-p.exited:
			return stampedLine{}, fmt.Errorf("conveyor up (%s) exited before printing %q: %v", p.name, substr, p.waitErr)
		case <-deadline.C:
			return stampedLine{}, fmt.Errorf("conveyor up (%s) printed no %q within %s", p.name, substr, timeout)
		case <-ctx.Done():
			return stampedLine{}, ctx.Err()
		}
	}
}

// stop sends SIGINT and waits for the exit, then kills after stopTimeout.
func (p *upProc) stop() error {
	select {
	case <-p.exited:
		return p.exitError()
	default:
	}
	if p.transport != nil {
		p.transport.CloseIdleConnections()
	}
	p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.exited:
		return p.exitError()
	case <-time.After(stopTimeout):
		p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("conveyor up (%s) did not stop within %s of SIGINT; killed", p.name, stopTimeout)
	}
}

func (p *upProc) exitError() error {
	if p.waitErr != nil {
		return fmt.Errorf("conveyor up (%s) exited: %w", p.name, p.waitErr)
	}
	return nil
}

// failed adds where to look to err.
func (p *upProc) failed(err error) error {
	return fmt.Errorf("%w\n  conveyor up stderr: %s\n  conveyor up stdout: %s", err, p.stderrLog, p.stdoutLog)
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat;
// 100 on every Linux the benchmark runs on.
const clockTicks = 100

// cpuTime is the user+system CPU time the process has used so far.
func (p *upProc) cpuTime() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("read CPU time: %w (Linux only)", err)
	}
	// The command name (field 2) may hold spaces: count from after it.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("read CPU time: unexpected /proc/<pid>/stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, errors.New("read CPU time: short /proc/<pid>/stat")
	}
	// Fields 14 and 15 of the file (utime, stime) are 11 and 12 here.
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("read CPU time: bad utime/stime")
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// peakRSSMB is the peak resident set of conveyor up, in MB (-1 when unknown).
func (p *upProc) peakRSSMB() float64 { return benchproc.PeakRSSMB(p.cmd.Process.Pid) }
