package ssmtest

import (
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
)

// Defaults of Options.
const (
	DefaultAccessKey = "AKIDCONVEYORTEST"
	DefaultRegion    = "us-east-1"
	DefaultPageSize  = 50
)

// Options describe one fake.
type Options struct {
	// Instances are the EC2 instances and their SSM registrations.
	Instances []Instance
	// PageSize is how many instances DescribeInstanceInformation returns
	// per page at most; 0 is DefaultPageSize.
	PageSize int
	// AccessKey is the key every request must be signed with; "" is
	// DefaultAccessKey, the one Clients uses.
	AccessKey string
	// Region is the region every request must be signed for; "" is
	// DefaultRegion.
	Region string
	// Want, when set, is what every SendCommand must carry besides the
	// job and the instance; a SendCommand that differs fails the test.
	Want *Want
	// Fault, when set, may fail a call; see Server.SetFault.
	Fault Fault
	// Agent, when set, plays the SSM agent: it runs each accepted
	// command, after SendCommand returned, and returns the command's final
	// status ("Success", "Failed"). Server.Wait waits for it. As the real
	// agent, it runs a command only while its instance is Online, and at
	// most the instance's AgentLimit commands at once; the others stay
	// Pending. Without Agent, commands stay Pending.
	Agent func(Command) (status string)
	// Group, when set, is an Auto Scaling group of some of Instances.
	Group *Group
	// Volumes and Snapshots are the EBS volumes and snapshots (ebs.go).
	Volumes   []Volume
	Snapshots []Snapshot
}

// Instance is one EC2 instance and its SSM registration.
type Instance struct {
	ID   string
	Tags map[string]string
	// State is the EC2 state: pending, running, stopping, stopped.
	State string
	// Ping is the SSM PingStatus (Online, ConnectionLost); "" when the
	// instance never registered with SSM.
	Ping string
	// OnlineAfter counts the DescribeInstanceInformation answers, once
	// StartInstances made the instance pending, until it is running and
	// Online; 0 or less is never (unless StartLatency is set).
	OnlineAfter int
	// StartLatency, when set, is how long a started instance takes to be
	// running and Online, in real time.
	StartLatency time.Duration
	// VCPUs is what DescribeInstances reports as its CPU options (cores,
	// one thread each); 0 is 2.
	VCPUs int
	// AgentLimit is the SSM agent's CommandWorkersLimit: how many
	// commands it runs at once; 0 is the agent's default, 5.
	AgentLimit int
	// Lifecycle is the target lifecycle state IMDS reports under
	// autoscaling/target-lifecycle-state ("InService", "Warmed:Stopped",
	// "Terminated"); the group sets it.
	Lifecycle string
	// SpotAction is the body of IMDS spot/instance-action, "" when no
	// interruption is notified.
	SpotAction string
	// Protected is the instance's scale-in protection.
	Protected bool
	// AZ is its availability zone; "" is us-east-1a.
	AZ string
}

// Want is what every SendCommand must carry.
type Want struct {
	Document         string
	ExecutionTimeout string // the ExecutionTimeout parameter, in seconds
	TimeoutSeconds   int    // the delivery timeout
	LogGroup         string // "" means CloudWatch output is not configured
}

// Command is one SendCommand that SSM accepted.
type Command struct {
	ID             string
	Instance       string // the one instance it was sent to
	JobID          string // the JobId parameter, "" unless exactly one
	Document       string
	InstanceIDs    []string
	Targets        []json.RawMessage
	Parameters     map[string][]string
	TimeoutSeconds int // 0 when not sent
	Comment        string
	// LogGroup is the CloudWatch log group, "" when CloudWatch output is
	// not configured; CloudWatch tells whether the output is enabled.
	LogGroup   string
	CloudWatch bool
	// Status is Pending, InProgress while the agent runs it, then what
	// Options.Agent returned, or TimedOut when it was not delivered
	// within TimeoutSeconds (see Server.Advance).
	Status string
	// Sent is when SSM accepted it, on the server's clock.
	Sent time.Time
	// Busy is how many of the instance's commands were still executing
	// (pending or in progress) when SSM accepted this one.
	Busy int
}

// Request is one request as received, with its decoded parameters.
type Request struct {
	Service string // "ssm", "ec2" or "autoscaling"
	Op      string // "SendCommand", "DescribeInstances"...
	// JSON is an SSM request's body; Form an EC2 request's parameters.
	JSON map[string]any
	Form url.Values
}

// Server is a fake SSM and EC2 endpoint. Requests that break the wire
// protocols, or Options.Want, fail the test. It is safe for concurrent use.
type Server struct {
	// URL is the endpoint, for both services.
	URL string

	t         testing.TB
	srv       *httptest.Server
	want      *Want
	agent     func(Command) string
	accessKey string
	region    string
	pageSize  int
	agents    sync.WaitGroup

	mu        sync.Mutex
	cond      *sync.Cond
	fault     Fault
	instances map[string]*Instance
	calls     map[string]int
	requests  []Request
	commands  []Command
	clock     time.Duration  // added to time.Now by Advance
	running   map[string]int // commands the agent runs now, per instance
	peak      map[string]int // the most it ran at once, per instance
	group     *Group
	lifecycle []LifecycleAction
	imds      map[string]*httptest.Server
	ebs       *ebsState
	closed    bool
}

// New starts a fake; it is closed when the test ends, after its agents.
func New(t testing.TB, opts Options) *Server {
	s := &Server{
		t: t, want: opts.Want, agent: opts.Agent, fault: opts.Fault,
		accessKey: cmpOr(opts.AccessKey, DefaultAccessKey),
		region:    cmpOr(opts.Region, DefaultRegion),
		pageSize:  opts.PageSize,
		instances: map[string]*Instance{},
		calls:     map[string]int{},
		running:   map[string]int{},
		peak:      map[string]int{},
		imds:      map[string]*httptest.Server{},
	}
	if s.pageSize <= 0 {
		s.pageSize = DefaultPageSize
	}
	s.ebsInit(opts.Volumes, opts.Snapshots)
	for _, inst := range opts.Instances {
		if inst.ID == "" || s.instances[inst.ID] != nil {
			t.Fatalf("ssmtest: instance ID %q is empty or given twice", inst.ID)
		}
		inst.Tags = maps.Clone(inst.Tags)
		s.instances[inst.ID] = &inst
	}
	if g := opts.Group; g != nil {
		g := *g
		g.Warm, g.InService = slices.Clone(g.Warm), slices.Clone(g.InService)
		g.Desired = len(g.InService)
		s.group = &g
		for _, id := range append(slices.Clone(g.Warm), g.InService...) {
			if s.instances[id] == nil {
				t.Fatalf("ssmtest: group instance %s is not among Instances", id)
			}
		}
		for _, id := range g.InService {
			s.instances[id].Lifecycle = "InService"
		}
		for _, id := range g.Warm {
			s.instances[id].Lifecycle = "Warmed:Stopped"
		}
	}
	s.cond = sync.NewCond(&s.mu)
	s.srv = httptest.NewServer(s)
	s.URL = s.srv.URL
	t.Cleanup(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.agents.Wait()
		s.srv.Close()
		// Closed without the lock: Close waits for requests in flight,
		// and an IMDS handler takes the lock (a watcher still polling
		// when the test ends deadlocked the cleanup).
		s.mu.Lock()
		imds := make([]*httptest.Server, 0, len(s.imds))
		for _, m := range s.imds {
			imds = append(imds, m)
		}
		s.mu.Unlock()
		for _, m := range imds {
			m.Close()
		}
	})
	return s
}

// now is the server's clock: real time plus what Advance added.
func (s *Server) now() time.Time { return time.Now().Add(s.clock) }

func cmpOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// AutoScaling returns an Auto Scaling client pointed at the fake, signed
// as Clients signs.
func (s *Server) AutoScaling() *autoscaling.Client {
	creds := credentials.NewStaticCredentialsProvider(DefaultAccessKey, "secret", "")
	return autoscaling.New(autoscaling.Options{Region: DefaultRegion, BaseEndpoint: aws.String(s.URL), Credentials: creds,
		Retryer: retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = 3
			o.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 0, nil })
		}), RetryMaxAttempts: 3})
}

// Clients returns SDK clients pointed at the fake, signed with
// DefaultAccessKey in DefaultRegion. Their own retryer makes 3 attempts
// without sleeping: a driver must replace it with its own, so a test
// counting attempts sees the driver's count, never 3 nor 3 times it.
func (s *Server) Clients() (*ssm.Client, *ec2.Client) {
	creds := credentials.NewStaticCredentialsProvider(DefaultAccessKey, "secret", "")
	retryer := func() aws.Retryer {
		return retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = 3
			o.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 0, nil })
		})
	}
	sc := ssm.New(ssm.Options{Region: DefaultRegion, BaseEndpoint: aws.String(s.URL), Credentials: creds, Retryer: retryer(), RetryMaxAttempts: 3})
	ec := ec2.New(ec2.Options{Region: DefaultRegion, BaseEndpoint: aws.String(s.URL), Credentials: creds, Retryer: retryer(), RetryMaxAttempts: 3})
	return sc, ec
}

// SetFault replaces the fault; nil fails nothing.
func (s *Server) SetFault(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = f
}

// Instance returns the instance id as it is now.
func (s *Server) Instance(id string) (Instance, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	inst, ok := s.instances[id]
	if !ok {
		return Instance{}, false
	}
	return *inst, true
}

// Requests returns every request received, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// Ops returns the operation of every request received, in order.
func (s *Server) Ops() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ops := make([]string, len(s.requests))
	for i, r := range s.requests {
		ops[i] = r.Op
	}
	return ops
}

// Calls returns how many times op was called, failed calls included.
func (s *Server) Calls(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[op]
}

// Commands returns the commands accepted so far, in order.
func (s *Server) Commands() []Command {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.commands)
}

// Delivered is dispatchtest's Harness.Delivered: the JobId parameters of
// the accepted commands, once there are n or bound passed.
func (s *Server) Delivered(n int, bound time.Duration) []string {
	stop := time.AfterFunc(bound, func() { s.mu.Lock(); s.cond.Broadcast(); s.mu.Unlock() })
	defer stop.Stop()
	end := time.Now().Add(bound)
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.commands) < n && time.Now().Before(end) {
		s.cond.Wait()
	}
	var ids []string
	for _, c := range s.commands {
		ids = append(ids, c.JobID)
	}
	return ids
}

// Wait waits for the agents of every command accepted so far.
func (s *Server) Wait() { s.agents.Wait() }

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if r.Method != http.MethodPost || r.URL.Path != "/" {
		s.t.Errorf("%s %s: AWS JSON and query protocols POST to /", r.Method, r.URL.Path)
	}
	service := "ec2"
	switch auth := r.Header.Get("Authorization"); {
	case r.Header.Get("X-Amz-Target") != "":
		service = "ssm"
	case strings.Contains(auth, "/autoscaling/aws4_request"):
		service = "autoscaling"
	}
	if auth := r.Header.Get("Authorization"); !strings.HasPrefix(auth, "AWS4-HMAC-SHA256 Credential="+s.accessKey+"/") ||
		!strings.Contains(auth, "/"+s.region+"/"+service+"/aws4_request") {
		s.t.Errorf("request not signed with SigV4 by %s for %s in %s: %q", s.accessKey, service, s.region, auth)
	}
	switch service {
	case "ssm":
		s.serveSSM(w, r, body)
	case "autoscaling":
		s.serveAutoScaling(w, r, body)
	default:
		s.serveEC2(w, r, body)
	}
}

// record records a request and returns the fault to answer it with.
// s.mu is held.
func (s *Server) record(req Request) *Error {
	s.calls[req.Op]++
	s.requests = append(s.requests, req)
	if s.fault != nil {
		return s.fault(req.Op, s.calls[req.Op])
	}
	return nil
}
