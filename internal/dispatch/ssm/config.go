package ssm

import (
	"errors"
	"fmt"
	"regexp"
	"time"
)

// Defaults of Config.
const (
	DefaultExecutionTimeout = time.Hour
	DefaultDeliveryTimeout  = 10 * time.Minute
	DefaultWaitOnline       = 20 * time.Second
	DefaultMaxAttempts      = 5
	DefaultBackoffBase      = 200 * time.Millisecond
	DefaultBackoffMax       = 5 * time.Second
	DefaultLoadTTL          = 2 * time.Second
	DefaultSlots            = 1
)

// Bounds enforced by Validate. The execution timeout travels as the
// document's ExecutionTimeout parameter, whose allowedPattern is
// ^[0-9]{1,5}$; SSM accepts a delivery timeout of 30 seconds to 30 days.
const (
	MaxExecutionTimeout = 99999 * time.Second
	MinDeliveryTimeout  = 30 * time.Second
	MaxDeliveryTimeout  = 30 * 24 * time.Hour
)

// Config says which document to send to which workers.
type Config struct {
	// DocumentName is the name or ARN of Conveyor's SSM document as
	// deployed (deploy/ssm/conveyor-run-job.yaml). Required.
	DocumentName string

	// InstanceID is a fixed worker ("i-0123..."). Set it, or TagKey and
	// TagValue, not both.
	InstanceID string
	// TagKey and TagValue select workers carrying this tag, for example
	// "conveyor:role" = "worker". A job goes to one of those online.
	TagKey, TagValue string

	// ExecutionTimeout is how long the job may run on the worker (the
	// document's ExecutionTimeout parameter, whole seconds, at most
	// MaxExecutionTimeout). Default DefaultExecutionTimeout.
	ExecutionTimeout time.Duration
	// DeliveryTimeout is how long SSM keeps trying to deliver the command
	// (SendCommand TimeoutSeconds, MinDeliveryTimeout to
	// MaxDeliveryTimeout). Default DefaultDeliveryTimeout.
	DeliveryTimeout time.Duration

	// LogGroup is the CloudWatch Logs group that receives the command's
	// output. Empty leaves CloudWatch output off.
	LogGroup string

	// StartStopped starts a stopped worker (ec2:StartInstances) when none
	// is online; it needs the EC2 client.
	StartStopped bool
	// WaitOnline is how long Dispatch waits for a started worker to come
	// online before returning ErrUnavailable; keep it short, a Lambda must
	// not be held for minutes. Zero means DefaultWaitOnline, negative
	// means do not wait.
	WaitOnline time.Duration

	// AutoScalingGroup, when set, is the Auto Scaling group the workers
	// belong to: with StartStopped, a worker is brought up by raising the
	// group's desired capacity to one (the group takes it from its warm
	// pool) rather than by starting an instance the group manages. It
	// needs the Auto Scaling client.
	AutoScalingGroup string

	// LoadTTL is how long one reading of the workers' load (their slots
	// and the commands in flight on each) serves later dispatches, which
	// count their own sends on it. Zero means DefaultLoadTTL, negative
	// reads it for every dispatch.
	LoadTTL time.Duration
	// DefaultSlots is the slots of a worker whose instance says nothing
	// (no SlotsTagKey tag, no CPU options). Zero means DefaultSlots.
	DefaultSlots int

	// Throttle bounds the retries of every AWS call.
	Throttle Throttle
}

// Throttle is the retry policy of each AWS call: throttling and transient
// errors are retried with exponential backoff and jitter, MaxAttempts in
// all. It replaces the clients' own retryers, so attempts never multiply.
type Throttle struct {
	MaxAttempts int           // attempts per call, the first included; default DefaultMaxAttempts
	Base        time.Duration // delay before the first retry, doubled each time; default DefaultBackoffBase
	Max         time.Duration // longest delay; default DefaultBackoffMax
}

// instanceIDPattern accepts EC2 instances and hybrid managed nodes.
var instanceIDPattern = regexp.MustCompile(`^m?i-[0-9a-f]{8,17}$`)

// asgNamePattern accepts Auto Scaling group names (not ARNs).
var asgNamePattern = regexp.MustCompile(`^[^:]{1,255}$`)

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.ExecutionTimeout == 0 {
		c.ExecutionTimeout = DefaultExecutionTimeout
	}
	if c.DeliveryTimeout == 0 {
		c.DeliveryTimeout = DefaultDeliveryTimeout
	}
	if c.WaitOnline == 0 {
		c.WaitOnline = DefaultWaitOnline
	}
	if c.LoadTTL == 0 {
		c.LoadTTL = DefaultLoadTTL
	}
	if c.DefaultSlots == 0 {
		c.DefaultSlots = DefaultSlots
	}
	if c.Throttle.MaxAttempts == 0 {
		c.Throttle.MaxAttempts = DefaultMaxAttempts
	}
	if c.Throttle.Base == 0 {
		c.Throttle.Base = DefaultBackoffBase
	}
	if c.Throttle.Max == 0 {
		c.Throttle.Max = DefaultBackoffMax
	}
	return c
}

// Validate reports every field that is missing or out of range.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.DocumentName == "" {
		bad("DocumentName is required: the name of the deployed conveyor-run-job document")
	}
	switch {
	case c.InstanceID != "" && (c.TagKey != "" || c.TagValue != ""):
		bad("set InstanceID or TagKey/TagValue, not both")
	case c.InstanceID != "":
		if !instanceIDPattern.MatchString(c.InstanceID) {
			bad("InstanceID %q is not an instance ID (i-0123456789abcdef0)", c.InstanceID)
		}
	case c.TagKey == "" && c.TagValue == "":
		bad("set InstanceID or TagKey and TagValue: no worker to send jobs to")
	case c.TagKey == "" || c.TagValue == "":
		bad("TagKey and TagValue go together (got key %q, value %q)", c.TagKey, c.TagValue)
	}
	if c.ExecutionTimeout < time.Second || c.ExecutionTimeout > MaxExecutionTimeout {
		bad("ExecutionTimeout must be between 1s and %ds, the document's five-digit limit (got %s)", seconds(MaxExecutionTimeout), c.ExecutionTimeout)
	}
	if c.DeliveryTimeout < MinDeliveryTimeout || c.DeliveryTimeout > MaxDeliveryTimeout {
		bad("DeliveryTimeout must be between %s and %s (got %s)", MinDeliveryTimeout, MaxDeliveryTimeout, c.DeliveryTimeout)
	}
	if c.DefaultSlots < 1 {
		bad("DefaultSlots must be at least 1 (got %d)", c.DefaultSlots)
	}
	if c.AutoScalingGroup != "" && !asgNamePattern.MatchString(c.AutoScalingGroup) {
		bad("AutoScalingGroup %q is not an Auto Scaling group name (1 to 255 characters, no colon)", c.AutoScalingGroup)
	}
	if c.Throttle.MaxAttempts < 1 {
		bad("Throttle.MaxAttempts must be at least 1 (got %d)", c.Throttle.MaxAttempts)
	}
	if c.Throttle.Base < 0 || c.Throttle.Max < c.Throttle.Base {
		bad("Throttle.Base must be at least 0 and at most Throttle.Max (got %s and %s)", c.Throttle.Base, c.Throttle.Max)
	}
	return errors.Join(errs...)
}

// seconds rounds d up to whole seconds.
func seconds(d time.Duration) int64 { return int64((d + time.Second - 1) / time.Second) }
