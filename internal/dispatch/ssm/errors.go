package ssm

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/aws/smithy-go"

	"github.com/conveyorhq/conveyor/internal/dispatch"
)

// newRetryer retries throttling and transient errors (the SDK's standard
// rules) at most t.MaxAttempts times in all, with exponential backoff and
// jitter. The retry token bucket is off: the attempt bound is the limit.
func newRetryer(t Throttle) aws.Retryer {
	return retry.NewStandard(func(o *retry.StandardOptions) {
		o.MaxAttempts = t.MaxAttempts
		o.MaxBackoff = t.Max
		o.Backoff = backoff(t)
		o.RateLimiter = ratelimit.None
	})
}

// backoff waits between half and all of Base * 2^(attempt-1), capped at
// Max: attempt 1 is the first retry.
func backoff(t Throttle) retry.BackoffDelayerFunc {
	return func(attempt int, _ error) (time.Duration, error) {
		d := t.Base
		for i := 1; i < attempt && d < t.Max; i++ {
			d *= 2
		}
		d = min(d, t.Max)
		if d <= 0 {
			return 0, nil
		}
		return d/2 + rand.N(d/2+1), nil
	}
}

// explain turns an AWS error from action (the IAM action, "ssm:SendCommand")
// on instance into a message that says what to do, wrapping
// dispatch.ErrUnavailable where retrying later can help.
func (d *Dispatcher) explain(action, instance string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", action, err)
	}
	var (
		invInstance *types.InvalidInstanceId
		invDoc      *types.InvalidDocument
		invVersion  *types.InvalidDocumentVersion
		invParams   *types.InvalidParameters
		platform    *types.UnsupportedPlatformType
		apiErr      smithy.APIError
		maxAttempts *retry.MaxAttemptsError
	)
	switch {
	case errors.As(err, &invInstance):
		return fmt.Errorf("%w: instance %s is not a managed instance that is running and online in SSM: check the SSM agent and the instance profile (%s: %s)",
			dispatch.ErrUnavailable, instance, action, invInstance.ErrorMessage())
	case errors.As(err, &invDoc), errors.As(err, &invVersion):
		return fmt.Errorf("%s: SSM document %q does not exist or cannot be used in this account and region: check DocumentName and deploy deploy/ssm/conveyor-run-job.yaml (%w)",
			action, d.cfg.DocumentName, err)
	case errors.As(err, &invParams):
		return fmt.Errorf("%s: SSM document %q rejected the parameters %s and %s: it is not Conveyor's conveyor-run-job document or is an old version of it; redeploy deploy/ssm/conveyor-run-job.yaml (%w)",
			action, d.cfg.DocumentName, ParamJobID, ParamExecutionTimeout, err)
	case errors.As(err, &platform):
		return fmt.Errorf("%s: instance %s is not a Linux instance, which the conveyor-run-job document requires (%w)", action, instance, err)
	case errors.As(err, &apiErr) && isAccessDenied(apiErr.ErrorCode()):
		return fmt.Errorf("access denied: the role running Conveyor needs the IAM permission %s%s (%s)",
			action, resourceHint(action, d.cfg.DocumentName), apiErr.ErrorMessage())
	case errors.As(err, &apiErr) && apiErr.ErrorCode() == "InvalidInstanceID.NotFound":
		return fmt.Errorf("%s: instance %s does not exist in this account and region: check InstanceID (%s)", action, instance, apiErr.ErrorMessage())
	case errors.As(err, &apiErr) && apiErr.ErrorCode() == "IncorrectInstanceState":
		return fmt.Errorf("%w: instance %s cannot be started now (%s); the event will be retried", dispatch.ErrUnavailable, instance, apiErr.ErrorMessage())
	case errors.As(err, &apiErr) && isThrottle(apiErr.ErrorCode()),
		errors.As(err, &maxAttempts):
		return fmt.Errorf("%w: %s kept failing after %d attempts (throttled or unreachable); the event will be retried: %w",
			dispatch.ErrUnavailable, action, d.cfg.Throttle.MaxAttempts, err)
	}
	return fmt.Errorf("%s: %w", action, err)
}

func isAccessDenied(code string) bool {
	switch code {
	case "AccessDeniedException", "AccessDenied", "UnauthorizedOperation":
		return true
	}
	return false
}

func isThrottle(code string) bool {
	_, ok := retry.DefaultThrottleErrorCodes[code]
	return ok
}

// resourceHint names the resources an action needs permission on.
func resourceHint(action, document string) string {
	if action == "ssm:SendCommand" {
		return fmt.Sprintf(" on both the document %q and the worker instances", document)
	}
	return ""
}
