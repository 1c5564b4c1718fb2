// Command cluster measures `conveyor worker serve` sharing the jobs of a
// `conveyor up --nats embedded --workers 0` on this machine: throughput
// with 1, 2 and 3 worker processes for a processor that sleeps 50 ms (it
// should grow with the workers' job slots), and the delay until a job is
// taken over after `kill -9` of the worker running it. Every process is the
// real binary; see bench/README.md.
//
//	go run ./bench/cluster -jobs 300 -slots 2
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conveyorhq/conveyor/bench/internal/benchproc"
	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobstore"
	"github.com/conveyorhq/conveyor/internal/s3event"
	"github.com/conveyorhq/conveyor/internal/s3server"
)

func main() {
	jobs := flag.Int("jobs", 300, "jobs per throughput run")
	slots := flag.Int("slots", 2, "job slots of each worker serve (workers:)")
	sleep := flag.Duration("sleep", 50*time.Millisecond, "what the processor sleeps per job")
	kills := flag.Int("kills", 3, "kill -9 runs for the redelivery delay")
	lease := flag.Duration("lease", 3*time.Second, "worker.lease (the ack wait is 1.5 leases)")
	bin := flag.String("conveyor", "", "conveyor binary (default: build ./cmd/conveyor)")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	if err := run(ctx, *bin, *jobs, *slots, *sleep, *kills, *lease); err != nil {
		fmt.Fprintln(os.Stderr, "bench/cluster:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, bin string, jobs, slots int, sleep time.Duration, kills int, lease time.Duration) error {
	tmp, err := os.MkdirTemp("", "conveyor-bench-cluster-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if bin == "" {
		if bin, err = benchproc.BuildConveyor(ctx, tmp); err != nil {
			return err
		}
	}
	fmt.Printf("machine: %d CPUs, load %s, %s\n", runtime.NumCPU(), benchproc.LoadAvg(), runtime.Version())
	fmt.Printf("processor: sleep %s; %d job slots per worker serve; lease %s\n\n", sleep, slots, lease)
	var base float64
	for n := 1; n <= 3; n++ {
		c, err := start(ctx, bin, filepath.Join(tmp, fmt.Sprintf("t%d", n)), slots, sleep, lease)
		if err != nil {
			return err
		}
		for i := range n {
			if err := c.serve(ctx, fmt.Sprint(i)); err != nil {
				c.stop()
				return err
			}
		}
		d, err := c.throughput(ctx, jobs)
		c.stop()
		if err != nil {
			return err
		}
		rate := float64(jobs) / d.Seconds()
		if n == 1 {
			base = rate
		}
		ideal := float64(n*slots) / sleep.Seconds()
		fmt.Printf("%d worker serve (%d slots): %d jobs in %s = %.1f jobs/s (x%.2f of one worker; %.0f%% of the processor-bound %0.f jobs/s)\n",
			n, n*slots, jobs, d.Round(time.Millisecond), rate, rate/base, 100*rate/ideal, ideal)
	}
	fmt.Println()
	c, err := start(ctx, bin, filepath.Join(tmp, "kill"), 1, sleep, lease)
	if err != nil {
		return err
	}
	defer c.stop()
	for i := range kills {
		a, b := fmt.Sprintf("k%da", i), fmt.Sprintf("k%db", i)
		if err := c.serve(ctx, a); err != nil {
			return err
		}
		d, err := c.killMidJob(ctx, fmt.Sprintf("slow/%d.txt", i), a, b)
		if err != nil {
			return err
		}
		fmt.Printf("kill -9 #%d: job taken over by another worker serve %s after the kill (%.2f leases)\n", i+1, d.Round(10*time.Millisecond), d.Seconds()/lease.Seconds())
	}
	return nil
}

// cluster is one up and its workers.
type cluster struct {
	bin, dir, config, natsURL string
	env                       []string
	up                        *exec.Cmd
	upErr                     *bytes.Buffer
	s3                        *s3.Client
	store                     *jobstore.Store
	mu                        sync.Mutex
	workers                   map[string]*exec.Cmd
}

func start(ctx context.Context, bin, dir string, slots int, sleep, lease time.Duration) (*cluster, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	proc := filepath.Join(dir, "proc.sh")
	body := fmt.Sprintf("#!/bin/sh\ncase \"$(cat \"$CONVEYOR_INPUT\")\" in slow*) sleep 30;; *) sleep %.3f;; esac\necho ok > \"$CONVEYOR_OUTPUT_DIR/out.txt\"\n", sleep.Seconds())
	if err := os.WriteFile(proc, []byte(body), 0o755); err != nil {
		return nil, err
	}
	s3Port, err := benchproc.FreePort()
	if err != nil {
		return nil, err
	}
	natsPort, err := benchproc.FreePort()
	if err != nil {
		return nil, err
	}
	common := fmt.Sprintf("processor:\n  command: [%q]\n  sandbox: off\nworker:\n  lease: %s\n", proc, lease)
	c := &cluster{bin: bin, dir: dir, config: filepath.Join(dir, "worker.yaml"), natsURL: fmt.Sprintf("nats://127.0.0.1:%d", natsPort), workers: map[string]*exec.Cmd{}}
	if err := os.WriteFile(c.config, []byte(common+fmt.Sprintf("workers: %d\n", slots)), 0o644); err != nil {
		return nil, err
	}
	upCfg := filepath.Join(dir, "up.yaml")
	if err := os.WriteFile(upCfg, []byte(common+fmt.Sprintf("cluster:\n  nats_addr: 127.0.0.1:%d\n", natsPort)), 0o644); err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	endpoint := fmt.Sprintf("http://127.0.0.1:%d", s3Port)
	c.up = exec.Command(bin, "up", "--data-dir", data, "--s3-addr", endpoint[7:], "--nats", "embedded", "--workers", "0", "--config", upCfg, "--dashboard-addr", "off")
	c.up.Env, c.up.Dir = benchproc.CleanEnv(), dir
	c.upErr = &bytes.Buffer{}
	c.up.Stderr = c.upErr
	out, err := c.up.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := c.up.Start(); err != nil {
		return nil, err
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		once := sync.Once{}
		for sc.Scan() {
			if sc.Text() == "conveyor is up" {
				once.Do(func() { close(ready) })
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(60 * time.Second):
		c.stop()
		return nil, fmt.Errorf("conveyor up did not start within 60s: %s", c.upErr)
	}
	var s3c struct {
		AccessKeyID     string `json:"access_key_id"`
		SecretAccessKey string `json:"secret_access_key"`
	}
	var nc struct{ User, Password string }
	if err := readJSON(filepath.Join(data, "credentials.json"), &s3c); err != nil {
		return nil, err
	}
	if err := readJSON(filepath.Join(data, "nats-credentials.json"), &nc); err != nil {
		return nil, err
	}
	c.s3 = s3server.NewClient(endpoint, s3c.AccessKeyID, s3c.SecretAccessKey, "us-east-1")
	c.store = jobstore.New(c.s3, "state")
	c.env = append(benchproc.CleanEnv(), "CONVEYOR_S3_ENDPOINT="+endpoint, "CONVEYOR_S3_ACCESS_KEY_ID="+s3c.AccessKeyID,
		"CONVEYOR_S3_SECRET_ACCESS_KEY="+s3c.SecretAccessKey, "CONVEYOR_CLUSTER_NATS_USER="+nc.User, "CONVEYOR_CLUSTER_NATS_PASSWORD="+nc.Password)
	return c, nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// serve starts a worker serve on its own volume and waits until it pulls.
func (c *cluster) serve(ctx context.Context, name string) error {
	cmd := exec.Command(c.bin, "worker", "serve", "--nats", c.natsURL, "--config", c.config,
		"--volume", filepath.Join(c.dir, "vol-"+name), "--data-dir", filepath.Join(c.dir, "wdata-"+name))
	cmd.Env, cmd.Dir = c.env, c.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out syncBuf
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return err
	}
	c.mu.Lock()
	c.workers[name] = cmd
	c.mu.Unlock()
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(out.String(), "pulling jobs"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("worker serve %s did not start: %s", name, out.String())
		}
	}
	return nil
}

func (c *cluster) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.workers {
		syscall.Kill(-w.Process.Pid, syscall.SIGTERM)
		w.Wait()
	}
	c.workers = map[string]*exec.Cmd{}
	if c.up != nil && c.up.Process != nil {
		c.up.Process.Signal(os.Interrupt)
		c.up.Wait()
		c.up = nil
	}
}

// throughput uploads n files and times from the first upload until every
// job succeeded.
func (c *cluster) throughput(ctx context.Context, n int) (time.Duration, error) {
	t0 := time.Now()
	ids := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 8)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			id, err := c.put(ctx, fmt.Sprintf("t/%04d.txt", i), fmt.Sprintf("file %d\n", i))
			ids[i] = id
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	for _, id := range ids {
		if _, err := c.wait(ctx, id, func(r *job.Record) bool { return r.State == job.Succeeded }); err != nil {
			return 0, err
		}
	}
	return time.Since(t0), nil
}

// killMidJob uploads a job that runs 30 s, kills -9 the worker serve a
// (its process group) once it holds the job, starts b, and returns the
// time from the kill to b's attempt start (in the record).
func (c *cluster) killMidJob(ctx context.Context, key, a, b string) (time.Duration, error) {
	id, err := c.put(ctx, key, "slow\n")
	if err != nil {
		return 0, err
	}
	if _, err := c.wait(ctx, id, func(r *job.Record) bool { return r.State == job.Running }); err != nil {
		return 0, err
	}
	if err := c.serve(ctx, b); err != nil {
		return 0, err
	}
	c.mu.Lock()
	w := c.workers[a]
	delete(c.workers, a)
	c.mu.Unlock()
	syscall.Kill(-w.Process.Pid, syscall.SIGKILL)
	w.Wait()
	killed := time.Now()
	r, err := c.wait(ctx, id, func(r *job.Record) bool { return r.State == job.Running && len(r.Attempts) >= 2 })
	if err != nil {
		return 0, err
	}
	return r.Attempts[len(r.Attempts)-1].StartedAt.Sub(killed), nil
}

func (c *cluster) put(ctx context.Context, key, body string) (string, error) {
	out, err := c.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("input"), Key: aws.String(key), Body: strings.NewReader(body)})
	if err != nil {
		return "", err
	}
	return job.ID("input", key, job.Revision(aws.ToString(out.VersionId), s3event.TrimETag(aws.ToString(out.ETag)))), nil
}

func (c *cluster) wait(ctx context.Context, id string, cond func(*job.Record) bool) (*job.Record, error) {
	for deadline := time.Now().Add(5 * time.Minute); ; time.Sleep(20 * time.Millisecond) {
		r, _, err := c.store.Get(ctx, id)
		if err == nil && cond(r) {
			return r, nil
		}
		if err == nil && r.State.Terminal() && !cond(r) {
			return nil, fmt.Errorf("job %s ended %s", id, r.State)
		}
		if time.Now().After(deadline) {
			return nil, errors.Join(fmt.Errorf("job %s: not there within 5 minutes", id), err)
		}
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }
