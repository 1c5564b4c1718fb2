package ssm

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/conveyorhq/conveyor/internal/dispatch"
	"github.com/conveyorhq/conveyor/internal/job"
)

// Parameter names of Conveyor's SSM document.
const (
	ParamJobID            = "JobId"
	ParamExecutionTimeout = "ExecutionTimeout"
)

var _ dispatch.Dispatcher = (*Dispatcher)(nil)

// Dispatcher sends each job ID to an online worker with SSM SendCommand.
// It is safe for concurrent use.
type Dispatcher struct {
	cfg    Config
	ssm    *ssm.Client
	ec2    *ec2.Client
	asg    *autoscaling.Client
	closed atomic.Bool

	ssmOpts []func(*ssm.Options)
	ec2Opts []func(*ec2.Options)
	asgOpts []func(*autoscaling.Options)

	// sendMu makes choosing a worker and sending to it one step, so two
	// dispatches never take the same free slot (a command is in SSM's
	// listings only once accepted).
	sendMu sync.Mutex
	mu     sync.Mutex // guards load
	load   *load      // the last reading of the workers' load; nil before one
}

// Option is an optional part of a Dispatcher.
type Option func(*Dispatcher)

// WithAutoScaling gives the dispatcher the Auto Scaling client that
// Config.AutoScalingGroup needs.
func WithAutoScaling(c *autoscaling.Client) Option { return func(d *Dispatcher) { d.asg = c } }

// New returns a Dispatcher for cfg (defaults applied). The EC2 client
// reads the workers' slots (without it every worker has DefaultSlots) and
// is needed with StartStopped. All clients' retryers are replaced, per
// call, by cfg.Throttle.
func New(cfg Config, ssmClient *ssm.Client, ec2Client *ec2.Client, opts ...Option) (*Dispatcher, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("ssm dispatcher config: %w", err)
	}
	if ssmClient == nil {
		return nil, errors.New("ssm dispatcher: the SSM client is nil")
	}
	if cfg.StartStopped && ec2Client == nil {
		return nil, errors.New("ssm dispatcher: StartStopped needs an EC2 client")
	}
	r := newRetryer(cfg.Throttle)
	d := &Dispatcher{
		cfg: cfg,
		ssm: ssmClient,
		ec2: ec2Client,
		// RetryMaxAttempts 0 keeps the client from wrapping our retryer
		// with its own attempt count.
		ssmOpts: []func(*ssm.Options){func(o *ssm.Options) { o.Retryer = r; o.RetryMaxAttempts = 0 }},
		ec2Opts: []func(*ec2.Options){func(o *ec2.Options) { o.Retryer = r; o.RetryMaxAttempts = 0 }},
		asgOpts: []func(*autoscaling.Options){func(o *autoscaling.Options) { o.Retryer = r; o.RetryMaxAttempts = 0 }},
	}
	for _, o := range opts {
		o(d)
	}
	if cfg.AutoScalingGroup != "" && cfg.StartStopped && d.asg == nil {
		return nil, errors.New("ssm dispatcher: AutoScalingGroup with StartStopped needs an Auto Scaling client (WithAutoScaling)")
	}
	return d, nil
}

// Name returns "ssm".
func (d *Dispatcher) Name() string { return "ssm" }

// Dispatch sends jobID to the online worker with the most free job slots
// and returns the SSM command ID. It returns dispatch.ErrInvalidJobID for
// a malformed ID (no AWS call is made), dispatch.ErrClosed after Close,
// an error wrapping dispatch.ErrFull when workers are online but all their
// slots are taken (nothing is sent: the job stays queued), and an error
// wrapping dispatch.ErrUnavailable when no worker is online now: none
// matches, the chosen one is starting, SSM rejected the instance, or SSM
// kept throttling; the caller retries later. Other errors are configuration or
// permission problems and say what to fix.
func (d *Dispatcher) Dispatch(ctx context.Context, jobID string) (string, error) {
	if d.closed.Load() {
		return "", dispatch.ErrClosed
	}
	if err := job.CheckID(jobID); err != nil {
		return "", fmt.Errorf("%w: %w", dispatch.ErrInvalidJobID, err)
	}
	d.sendMu.Lock()
	defer d.sendMu.Unlock()
	target, err := d.pickTarget(ctx, jobID)
	if err != nil {
		return "", fmt.Errorf("dispatch job %s: %w", jobID, err)
	}
	ref, err := d.send(ctx, jobID, target)
	if err != nil {
		d.unsent(target)
		return "", fmt.Errorf("dispatch job %s: %w", jobID, err)
	}
	return ref, nil
}

// Close makes later Dispatch calls return dispatch.ErrClosed. Commands
// already sent keep running. Close is idempotent.
func (d *Dispatcher) Close() error {
	d.closed.Store(true)
	return nil
}

// send calls SendCommand for one job on one instance.
func (d *Dispatcher) send(ctx context.Context, jobID, instanceID string) (string, error) {
	in := &ssm.SendCommandInput{
		DocumentName: aws.String(d.cfg.DocumentName),
		InstanceIds:  []string{instanceID},
		Parameters: map[string][]string{
			ParamJobID:            {jobID},
			ParamExecutionTimeout: {strconv.FormatInt(seconds(d.cfg.ExecutionTimeout), 10)},
		},
		TimeoutSeconds: aws.Int32(int32(seconds(d.cfg.DeliveryTimeout))),
		Comment:        aws.String("conveyor job " + jobID),
	}
	if d.cfg.LogGroup != "" {
		in.CloudWatchOutputConfig = &types.CloudWatchOutputConfig{
			CloudWatchOutputEnabled: true,
			CloudWatchLogGroupName:  aws.String(d.cfg.LogGroup),
		}
	}
	out, err := d.ssm.SendCommand(ctx, in, d.ssmOpts...)
	if err != nil {
		return "", d.explain("ssm:SendCommand", instanceID, err)
	}
	if out.Command == nil || aws.ToString(out.Command.CommandId) == "" {
		return "", fmt.Errorf("send command to %s: SSM returned no command ID", instanceID)
	}
	return aws.ToString(out.Command.CommandId), nil
}
