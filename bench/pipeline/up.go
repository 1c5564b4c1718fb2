package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conveyorhq/conveyor/bench/internal/benchproc"
	"github.com/conveyorhq/conveyor/internal/s3server"
)

// Bounds of the subprocess's start and stop: failure bounds, not delays.
const (
	readyTimeout = 60 * time.Second
	stopTimeout  = 30 * time.Second
)

// Bucket names of conveyor's default configuration.
const (
	inputBucket = "input"
	stateBucket = "state"
	region      = "us-east-1"
)

// upProc is one running `conveyor up`.
type upProc struct {
	bin       string
	dataDir   string
	processor string
	workers   int
	endpoint  string
	stderrLog string
	stdoutLog string
	s3        *s3.Client
	transport *http.Transport
	cmd       *exec.Cmd
	exited    chan struct{}
	waitErr   error
}

// startUp starts `conveyor up` on dataDir with a free loopback port and
// returns once it printed "conveyor is up" and its credentials are readable.
func startUp(ctx context.Context, bin, dataDir, processor string, workers int) (*upProc, error) {
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return nil, err
	}
	port, err := benchproc.FreePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	p := &upProc{
		bin: bin, dataDir: dataDir, processor: processor, workers: workers,
		endpoint:  "http://" + addr,
		stderrLog: filepath.Join(filepath.Dir(dataDir), "conveyor-up-"+processor+".stderr.log"),
		stdoutLog: filepath.Join(filepath.Dir(dataDir), "conveyor-up-"+processor+".stdout.log"),
		exited:    make(chan struct{}),
	}
	args := []string{"up", "--data-dir", dataDir, "--s3-addr", addr, "--processor", processor}
	if workers > 0 {
		args = append(args, "--workers", strconv.Itoa(workers))
	}
	// Not CommandContext: stop() ends it with SIGINT, the way a user does.
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = benchproc.CleanEnv()
	p.cmd.Dir = filepath.Dir(dataDir) // no stray ./conveyor.yaml
	errf, err := os.Create(p.stderrLog)
	if err != nil {
		return nil, err
	}
	outf, err := os.Create(p.stdoutLog)
	if err != nil {
		errf.Close()
		return nil, err
	}
	p.cmd.Stderr = errf
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		errf.Close()
		outf.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		seen := false
		for sc.Scan() {
			fmt.Fprintln(outf, sc.Text())
			if !seen && strings.Contains(sc.Text(), "conveyor is up") {
				seen = true
				close(ready)
			}
		}
		io.Copy(io.Discard, stdout)
		p.waitErr = p.cmd.Wait()
		errf.Close()
		outf.Close()
		close(p.exited)
	}()
	select {
	case <-ready:
	case <-p.exited:
		return nil, p.failed(fmt.Errorf("conveyor up exited before it was up: %v", p.waitErr))
	case <-time.After(readyTimeout):
		p.stop()
		return nil, p.failed(fmt.Errorf("conveyor up printed no \"conveyor is up\" within %s", readyTimeout))
	case <-ctx.Done():
		p.stop()
		return nil, ctx.Err()
	}
	creds, err := readCredentials(dataDir)
	if err != nil {
		p.stop()
		return nil, p.failed(err)
	}
	// The SDK's default transport, held here so that stop can close its
	// idle keep-alive connections: the server's shutdown waits for them.
	p.transport = awshttp.NewBuildableClient().GetTransport()
	base := s3server.NewClient(p.endpoint, creds.AccessKeyID, creds.SecretAccessKey, region)
	p.s3 = s3.New(base.Options(), func(o *s3.Options) { o.HTTPClient = &http.Client{Transport: p.transport} })
	return p, nil
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
	start := time.Now()
	p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.exited:
		if d := time.Since(start); d > 2*time.Second {
			fmt.Fprintf(progressOut, "conveyor up (%s) took %s to stop\n", p.processor, d.Round(100*time.Millisecond))
		}
		return p.exitError()
	case <-time.After(stopTimeout):
		p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("conveyor up did not stop within %s of SIGINT; killed", stopTimeout)
	}
}

func (p *upProc) exitError() error {
	if p.waitErr != nil {
		return fmt.Errorf("conveyor up exited: %w", p.waitErr)
	}
	return nil
}

// failed adds where to look to err.
func (p *upProc) failed(err error) error {
	return fmt.Errorf("%w\n  conveyor up stderr: %s\n  conveyor up stdout: %s", err, p.stderrLog, p.stdoutLog)
}

// awsEnv is the environment of the AWS CLI pointed at this pipeline: the
// export lines of `conveyor env`, and config files of its own so that
// nothing in ~/.aws takes part.
func (p *upProc) awsEnv(ctx context.Context, dir string) ([]string, error) {
	cmd := exec.CommandContext(ctx, p.bin, "env", "--data-dir", p.dataDir)
	cmd.Env, cmd.Dir = benchproc.CleanEnv(), dir
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("conveyor env: %w", err)
	}
	env := benchproc.CleanEnv()
	for _, line := range strings.Split(string(out), "\n") {
		kv, ok := strings.CutPrefix(strings.TrimSpace(line), "export ")
		if !ok {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		v = strings.Trim(v, "'") // conveyor env quotes only values that need it
		env = append(env, k+"="+v)
		if k == "AWS_REGION" {
			env = append(env, "AWS_DEFAULT_REGION="+v) // AWS CLI v1 reads only this one
		}
	}
	cfg := filepath.Join(dir, "aws-config")
	// Path-style addressing: the endpoint is an IP address.
	if err := os.WriteFile(cfg, []byte("[default]\nregion = "+region+"\ns3 =\n  addressing_style = path\n"), 0o600); err != nil {
		return nil, err
	}
	creds := filepath.Join(dir, "aws-credentials")
	if err := os.WriteFile(creds, nil, 0o600); err != nil {
		return nil, err
	}
	return append(env, "AWS_CONFIG_FILE="+cfg, "AWS_SHARED_CREDENTIALS_FILE="+creds,
		"AWS_EC2_METADATA_DISABLED=true", "AWS_PAGER="), nil
}

type credentials struct {
	AccessKeyID     string `json:"access_key_id"`
	SecretAccessKey string `json:"secret_access_key"`
}

// readCredentials reads <data>/credentials.json, written by conveyor up.
func readCredentials(dataDir string) (credentials, error) {
	var c credentials
	b, err := os.ReadFile(filepath.Join(dataDir, "credentials.json"))
	if err != nil {
		return c, fmt.Errorf("read credentials: %w", err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("read credentials: %w", err)
	}
	if c.AccessKeyID == "" || c.SecretAccessKey == "" {
		return c, errors.New("credentials.json has no access_key_id or secret_access_key")
	}
	return c, nil
}

// errExited reports whether the subprocess is gone, for the wait loops.
func (p *upProc) errExited() error {
	select {
	case <-p.exited:
		return fmt.Errorf("conveyor up exited: %v", p.waitErr)
	default:
		return nil
	}
}

// peakRSSMB is the peak resident set of conveyor up, in MB (-1 when unknown).
func (p *upProc) peakRSSMB() float64 { return benchproc.PeakRSSMB(p.cmd.Process.Pid) }
