package lambda

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/conveyorhq/conveyor/internal/dispatch/ssm"
	"github.com/conveyorhq/conveyor/internal/orchestrator"
)

// Environment variables the stack sets on the function.
const (
	EnvInputBucket      = "CONVEYOR_INPUT_BUCKET"       // required
	EnvOutputBucket     = "CONVEYOR_OUTPUT_BUCKET"      // required (the worker writes it; checked so a half-configured stack fails early)
	EnvStateBucket      = "CONVEYOR_STATE_BUCKET"       // required
	EnvSSMDocument      = "CONVEYOR_SSM_DOCUMENT"       // required: name or ARN of the conveyor-run-job document
	EnvWorkerInstanceID = "CONVEYOR_WORKER_INSTANCE_ID" // a fixed worker, or:
	EnvWorkerTagKey     = "CONVEYOR_WORKER_TAG_KEY"     // workers carrying this tag key...
	EnvWorkerTagValue   = "CONVEYOR_WORKER_TAG_VALUE"   // ...with this value
	EnvWorkerGroup      = "CONVEYOR_WORKER_GROUP"       // the workers' Auto Scaling group: a stopped fleet is started by raising its desired capacity
	EnvSSMLogGroup      = "CONVEYOR_SSM_LOG_GROUP"      // CloudWatch Logs group of the command output; empty for none
	EnvFilterPrefixes   = "CONVEYOR_FILTER_PREFIXES"    // comma-separated; empty accepts every key
	EnvFilterSuffixes   = "CONVEYOR_FILTER_SUFFIXES"    // comma-separated; empty accepts every key
	EnvExecutionTimeout = "CONVEYOR_EXECUTION_TIMEOUT"  // Go duration; default DefaultExecutionTimeout
	EnvMaxAttempts      = "CONVEYOR_MAX_ATTEMPTS"       // attempts per job; default DefaultMaxAttempts
	EnvStartStopped     = "CONVEYOR_START_STOPPED"      // true/false; default DefaultStartStopped
	EnvS3PathStyle      = "CONVEYOR_S3_PATH_STYLE"      // 1 forces path-style S3 requests
	EnvInputVersioned   = "CONVEYOR_INPUT_VERSIONED"    // true: the input bucket is versioned (the reconciler lists versions)
	EnvRole             = "CONVEYOR_LAMBDA_ROLE"        // orchestrator (default) or reconciler: which handler the bootstrap runs
	EnvHistoryDays      = "CONVEYOR_HISTORY_DAYS"       // days finished records are kept (the lifecycle rule); older inputs are never taken for lost events
	EnvEventBus         = "CONVEYOR_EVENT_BUS"          // EventBridge bus (name or ARN, "default") for job state change events; empty: none
)

// Role is which of the stack's two functions a bootstrap is: the same
// binary (one code asset) serves both, told apart by EnvRole.
type Role string

// The roles.
const (
	// RoleOrchestrator turns object-created events into jobs.
	RoleOrchestrator Role = "orchestrator"
	// RoleReconciler runs one bounded reconciliation per scheduled event.
	RoleReconciler Role = "reconciler"
)

// Defaults of the optional variables.
const (
	DefaultExecutionTimeout = ssm.DefaultExecutionTimeout
	DefaultMaxAttempts      = orchestrator.DefaultMaxAttempts
	DefaultStartStopped     = true
)

// Config is the function's configuration, as the stack sets it.
type Config struct {
	Orchestrator orchestrator.Config
	Dispatch     ssm.Config
	OutputBucket string
	StateBucket  string
	// S3PathStyle addresses buckets as paths (http://host/bucket/key): what
	// an S3-compatible endpoint other than AWS needs.
	S3PathStyle bool
	// InputVersioned says the input bucket keeps versions, so jobs are
	// keyed on version IDs and the reconciler lists versions.
	InputVersioned bool
	// Role is the function's role; RoleOrchestrator when EnvRole is unset.
	Role Role
	// HistoryDays is how long finished records are kept (0: forever): a
	// sweep never submits an input version older than that, whose record
	// may have expired.
	HistoryDays int
	// EventBus is the EventBridge bus job state changes are put on
	// (jobevents); "" puts none.
	EventBus string
}

// ConfigFromEnv reads the configuration with getenv (os.Getenv in the
// function). The error is one line that names every variable to fix.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	get := func(name string) string { return strings.TrimSpace(getenv(name)) }
	required := func(name, what string) string {
		v := get(name)
		if v == "" {
			bad("%s is not set: %s", name, what)
		}
		return v
	}

	c := Config{
		Orchestrator: orchestrator.Config{
			InputBucket: required(EnvInputBucket, "the bucket whose uploads become jobs"),
			Prefixes:    splitList(get(EnvFilterPrefixes)),
			Suffixes:    splitList(get(EnvFilterSuffixes)),
			MaxAttempts: DefaultMaxAttempts,
		},
		Dispatch: ssm.Config{
			DocumentName:     required(EnvSSMDocument, "the name of the deployed conveyor-run-job SSM document"),
			InstanceID:       get(EnvWorkerInstanceID),
			TagKey:           get(EnvWorkerTagKey),
			TagValue:         get(EnvWorkerTagValue),
			AutoScalingGroup: get(EnvWorkerGroup),
			LogGroup:         get(EnvSSMLogGroup),
			ExecutionTimeout: DefaultExecutionTimeout,
			StartStopped:     DefaultStartStopped,
		},
		OutputBucket: required(EnvOutputBucket, "the bucket the worker writes results to"),
		StateBucket:  required(EnvStateBucket, "the bucket that holds the job records"),
		S3PathStyle:  get(EnvS3PathStyle) == "1",
		EventBus:     get(EnvEventBus),
		Role:         RoleOrchestrator,
	}
	switch r := Role(get(EnvRole)); r {
	case "":
	case RoleOrchestrator, RoleReconciler:
		c.Role = r
	default:
		bad("%s=%q is not a role this bootstrap has: set %s or %s (unset means %s)", EnvRole, string(r), RoleOrchestrator, RoleReconciler, RoleOrchestrator)
	}

	d := &c.Dispatch
	switch {
	case d.InstanceID != "" && (d.TagKey != "" || d.TagValue != ""):
		bad("set %s or %s and %s, not both", EnvWorkerInstanceID, EnvWorkerTagKey, EnvWorkerTagValue)
	case d.InstanceID == "" && d.TagKey == "" && d.TagValue == "":
		bad("set %s, or %s and %s: no worker to send jobs to", EnvWorkerInstanceID, EnvWorkerTagKey, EnvWorkerTagValue)
	case d.InstanceID == "" && (d.TagKey == "" || d.TagValue == ""):
		bad("%s and %s go together (got %q and %q)", EnvWorkerTagKey, EnvWorkerTagValue, d.TagKey, d.TagValue)
	}
	if v := get(EnvExecutionTimeout); v != "" {
		t, err := time.ParseDuration(v)
		switch {
		case err != nil:
			bad("%s=%q is not a duration; use a value like 30m or 2h", EnvExecutionTimeout, v)
		case t < time.Second || t > ssm.MaxExecutionTimeout:
			bad("%s=%s is out of range: between 1s and %s", EnvExecutionTimeout, v, ssm.MaxExecutionTimeout)
		default:
			d.ExecutionTimeout = t
		}
	}
	if v := get(EnvMaxAttempts); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			bad("%s=%q must be a whole number between 1 and 100", EnvMaxAttempts, v)
		} else {
			c.Orchestrator.MaxAttempts = n
		}
	}
	if v := get(EnvStartStopped); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			bad("%s=%q must be true or false", EnvStartStopped, v)
		} else {
			d.StartStopped = b
		}
	}
	if v := get(EnvInputVersioned); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			bad("%s=%q must be true or false", EnvInputVersioned, v)
		} else {
			c.InputVersioned = b
		}
	}
	if v := get(EnvHistoryDays); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			bad("%s=%q must be a whole number of days", EnvHistoryDays, v)
		} else {
			c.HistoryDays = n
		}
	}
	if len(problems) > 0 {
		return c, fmt.Errorf("configuration: %s", strings.Join(problems, "; "))
	}
	// The components check the rest (an instance ID of the wrong shape).
	if err := c.Orchestrator.WithDefaults().Validate(); err != nil {
		return c, fmt.Errorf("configuration (%s, %s): %s", EnvInputBucket, EnvMaxAttempts, oneLine(err))
	}
	if err := c.Dispatch.WithDefaults().Validate(); err != nil {
		return c, fmt.Errorf("configuration (%s, %s): %s", EnvSSMDocument, EnvWorkerInstanceID, oneLine(err))
	}
	return c, nil
}

// splitList splits a comma-separated list, dropping empty entries.
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }
