package lambda

import (
	"context"
	"fmt"
	"io"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	awsssm "github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/conveyorhq/conveyor/internal/dispatch/ssm"
	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobevents"
	"github.com/conveyorhq/conveyor/internal/jobmetrics"
	"github.com/conveyorhq/conveyor/internal/jobstore"
	"github.com/conveyorhq/conveyor/internal/orchestrator"
)

// NewFromEnv wires the handler for AWS, once per cold start: the
// configuration from getenv, the S3, SSM and EC2 clients from the default
// AWS configuration (the function's role, AWS_REGION, and the
// AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_S3, _SSM, _EC2, _AUTO_SCALING and
// _EVENTBRIDGE overrides), the job metrics (to out) and the job events'
// emitter when EnvEventBus is set, the SSM
// dispatcher (behind FailFast) and the orchestrator, and the role (EnvRole)
// that says which events it handles. Log lines go to out.
func NewFromEnv(ctx context.Context, getenv func(string) string, out io.Writer) (*Handler, error) {
	cfg, err := ConfigFromEnv(getenv)
	if err != nil {
		return nil, err
	}
	ac, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("load AWS configuration: %w", err)
	}
	if ac.Region == "" {
		return nil, fmt.Errorf("load AWS configuration: AWS_REGION is not set")
	}
	// An endpoint other than AWS's is an S3-compatible server, which
	// addresses buckets by path.
	pathStyle := cfg.S3PathStyle || getenv("AWS_ENDPOINT_URL_S3") != "" || getenv("AWS_ENDPOINT_URL") != ""
	s3c := s3.NewFromConfig(ac, func(o *s3.Options) { o.UsePathStyle = pathStyle })
	d, err := ssm.New(cfg.Dispatch, awsssm.NewFromConfig(ac), ec2.NewFromConfig(ac), ssm.WithAutoScaling(autoscaling.NewFromConfig(ac)))
	if err != nil {
		return nil, err
	}
	o, err := orchestrator.New(cfg.Orchestrator, s3c, jobstore.New(s3c, cfg.StateBucket), FailFast(d))
	if err != nil {
		return nil, fmt.Errorf("configuration: %w", err)
	}
	h := New(o, out)
	h.Metrics = jobmetrics.New(out, cfg.StateBucket)
	if cfg.EventBus != "" {
		h.Events = jobevents.NewEmitter(&jobevents.EventBridge{Client: eventbridge.NewFromConfig(ac), Bus: cfg.EventBus}, cfg.OutputBucket,
			func(format string, args ...any) { h.log.WarnContext(ctx, fmt.Sprintf(format, args...)) })
	}
	o.OnChange = func(r *job.Record) {
		h.Events.Changed(r)
		h.Metrics.Changed(r)
	}
	h.Role = cfg.Role
	h.Reconciler.Versioned = cfg.InputVersioned
	h.Reconciler.MaxAge = time.Duration(cfg.HistoryDays) * 24 * time.Hour
	h.Function = getenv("AWS_LAMBDA_FUNCTION_NAME")
	return h, nil
}
