package lambda_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/conveyorhq/conveyor/internal/dispatch/ssm"
	"github.com/conveyorhq/conveyor/internal/lambda"
	"github.com/conveyorhq/conveyor/internal/orchestrator"
)

// stackEnv is what the stack sets, with a fixed worker.
func stackEnv() map[string]string {
	return map[string]string{
		lambda.EnvInputBucket:      "in",
		lambda.EnvOutputBucket:     "out",
		lambda.EnvStateBucket:      "state",
		lambda.EnvSSMDocument:      "conveyor-run-job",
		lambda.EnvWorkerInstanceID: "i-0123456789abcdef0",
	}
}

func TestConfigFromEnv(t *testing.T) {
	t.Parallel()
	env := stackEnv()
	env[lambda.EnvFilterPrefixes] = "uploads/, incoming/ ,"
	env[lambda.EnvFilterSuffixes] = ".csv"
	env[lambda.EnvSSMLogGroup] = "/conveyor/jobs"
	env[lambda.EnvExecutionTimeout] = "2h30m"
	env[lambda.EnvMaxAttempts] = "5"
	env[lambda.EnvStartStopped] = "false"
	got, err := lambda.ConfigFromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	want := lambda.Config{
		Orchestrator: orchestrator.Config{InputBucket: "in", Prefixes: []string{"uploads/", "incoming/"}, Suffixes: []string{".csv"}, MaxAttempts: 5},
		Dispatch: ssm.Config{
			DocumentName: "conveyor-run-job", InstanceID: "i-0123456789abcdef0", LogGroup: "/conveyor/jobs",
			ExecutionTimeout: 150 * time.Minute, StartStopped: false,
		},
		OutputBucket: "out",
		StateBucket:  "state",
		Role:         lambda.RoleOrchestrator,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	env := stackEnv()
	delete(env, lambda.EnvWorkerInstanceID)
	env[lambda.EnvWorkerTagKey], env[lambda.EnvWorkerTagValue] = "conveyor:role", "worker"
	env[lambda.EnvS3PathStyle] = "1"
	got, err := lambda.ConfigFromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if got.Dispatch.ExecutionTimeout != time.Hour || got.Orchestrator.MaxAttempts != 3 || !got.Dispatch.StartStopped ||
		got.Dispatch.TagKey != "conveyor:role" || got.Dispatch.TagValue != "worker" || !got.S3PathStyle ||
		got.Orchestrator.Prefixes != nil || got.Orchestrator.Suffixes != nil || got.Role != lambda.RoleOrchestrator {
		t.Errorf("defaults: %+v", got)
	}
}

func TestConfigRole(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"orchestrator", "reconciler", " reconciler "} {
		env := stackEnv()
		env[lambda.EnvRole] = v
		got, err := lambda.ConfigFromEnv(func(k string) string { return env[k] })
		if err != nil || string(got.Role) != strings.TrimSpace(v) {
			t.Errorf("%s=%q: role %q, %v", lambda.EnvRole, v, got.Role, err)
		}
	}
}

func TestConfigErrorsNameTheVariable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		set  map[string]string // "" deletes
		want []string          // each must appear in the one-line message
	}{
		{"no input bucket", map[string]string{lambda.EnvInputBucket: ""}, []string{"CONVEYOR_INPUT_BUCKET is not set"}},
		{"no output bucket", map[string]string{lambda.EnvOutputBucket: ""}, []string{"CONVEYOR_OUTPUT_BUCKET is not set"}},
		{"no state bucket", map[string]string{lambda.EnvStateBucket: ""}, []string{"CONVEYOR_STATE_BUCKET is not set"}},
		{"no document", map[string]string{lambda.EnvSSMDocument: ""}, []string{"CONVEYOR_SSM_DOCUMENT is not set"}},
		{"no worker", map[string]string{lambda.EnvWorkerInstanceID: ""}, []string{"CONVEYOR_WORKER_INSTANCE_ID", "CONVEYOR_WORKER_TAG_KEY"}},
		{"both workers", map[string]string{lambda.EnvWorkerTagKey: "k", lambda.EnvWorkerTagValue: "v"}, []string{"not both"}},
		{"tag without value", map[string]string{lambda.EnvWorkerInstanceID: "", lambda.EnvWorkerTagKey: "k"}, []string{"CONVEYOR_WORKER_TAG_VALUE go together"}},
		{"bad instance", map[string]string{lambda.EnvWorkerInstanceID: "web-1"}, []string{"CONVEYOR_WORKER_INSTANCE_ID", `"web-1" is not an instance ID`}},
		{"bad timeout", map[string]string{lambda.EnvExecutionTimeout: "10"}, []string{`CONVEYOR_EXECUTION_TIMEOUT="10" is not a duration`}},
		{"long timeout", map[string]string{lambda.EnvExecutionTimeout: "48h"}, []string{"CONVEYOR_EXECUTION_TIMEOUT=48h is out of range"}},
		{"bad attempts", map[string]string{lambda.EnvMaxAttempts: "0"}, []string{`CONVEYOR_MAX_ATTEMPTS="0" must be`}},
		{"bad bool", map[string]string{lambda.EnvStartStopped: "sometimes"}, []string{`CONVEYOR_START_STOPPED="sometimes" must be true or false`}},
		{"bad versioned", map[string]string{lambda.EnvInputVersioned: "maybe"}, []string{`CONVEYOR_INPUT_VERSIONED="maybe" must be true or false`}},
		{"unknown role", map[string]string{lambda.EnvRole: "janitor"}, []string{`CONVEYOR_LAMBDA_ROLE="janitor" is not a role this bootstrap has: set orchestrator or reconciler`}},
		{"two problems", map[string]string{lambda.EnvInputBucket: "", lambda.EnvMaxAttempts: "x"}, []string{"CONVEYOR_INPUT_BUCKET", "; CONVEYOR_MAX_ATTEMPTS"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := stackEnv()
			for k, v := range tc.set {
				env[k] = v
			}
			_, err := lambda.ConfigFromEnv(func(k string) string { return env[k] })
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("message spans lines: %q", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q lacks %q", msg, w)
				}
			}
		})
	}
}

// The workers' Auto Scaling group reaches the dispatcher; a name that is
// not one is refused, naming the variable's field.
func TestConfigWorkerGroup(t *testing.T) {
	t.Parallel()
	env := stackEnv()
	delete(env, lambda.EnvWorkerInstanceID)
	env[lambda.EnvWorkerTagKey], env[lambda.EnvWorkerTagValue] = "conveyor:role", "worker"
	env[lambda.EnvWorkerGroup] = "Conveyor-workers"
	got, err := lambda.ConfigFromEnv(func(k string) string { return env[k] })
	if err != nil || got.Dispatch.AutoScalingGroup != "Conveyor-workers" {
		t.Errorf("AutoScalingGroup %q, %v; want Conveyor-workers", got.Dispatch.AutoScalingGroup, err)
	}
	env[lambda.EnvWorkerGroup] = "arn:aws:autoscaling:x"
	if _, err := lambda.ConfigFromEnv(func(k string) string { return env[k] }); err == nil || !strings.Contains(err.Error(), "AutoScalingGroup") {
		t.Errorf("a group ARN: %v, want an error naming AutoScalingGroup", err)
	}
}
