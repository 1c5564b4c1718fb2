package cwlogs_test

import (
	"context"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/google/go-cmp/cmp"

	"github.com/conveyorhq/conveyor/internal/cwlogs"
	"github.com/conveyorhq/conveyor/internal/dispatch/ssm/ssmtest"
)

const id = "0123456789abcdef0123456789abcdef"

func client(l *ssmtest.Logs) *cloudwatchlogs.Client {
	return cloudwatchlogs.New(cloudwatchlogs.Options{
		Region: ssmtest.DefaultRegion, BaseEndpoint: aws.String(l.URL), RetryMaxAttempts: 1,
		Credentials: credentials.NewStaticCredentialsProvider(ssmtest.DefaultAccessKey, "secret", ""),
	})
}

func TestAttemptLogBecomesAStreamOfLines(t *testing.T) {
	t.Parallel()
	logs := ssmtest.NewLogs(t, "/conveyor/jobs")
	s := &cwlogs.Sink{Client: client(logs), Group: "/conveyor/jobs"}
	long := strings.Repeat("x", cwlogs.MaxEventBytes+10)
	var many strings.Builder
	for range 300 { // 300 lines of 4 KiB: more than one call's MiB
		many.WriteString(strings.Repeat("y", 4096) + "\n")
	}
	text := "=== conveyor: job attempt 2\r\nfirst\n\nsecond\n" + long + "\n" + many.String() + "last without newline"
	if err := s.PutAttemptLog(context.Background(), id, 2, strings.NewReader(text)); err != nil {
		t.Fatal(err)
	}
	got := logs.Messages("/conveyor/jobs", id+"/2")
	want := []string{"=== conveyor: job attempt 2", "first", "second", long[:cwlogs.MaxEventBytes], "xxxxxxxxxx"}
	for range 300 {
		want = append(want, strings.Repeat("y", 4096))
	}
	want = append(want, "last without newline")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events (-want +got):\n%.2000s", diff)
	}

	// Sent again (a retried send), the stream exists and grows.
	if err := s.PutAttemptLog(context.Background(), id, 2, strings.NewReader("again\n")); err != nil {
		t.Fatal(err)
	}
	if got := logs.Messages("/conveyor/jobs", id+"/2"); got[len(got)-1] != "again" {
		t.Errorf("last event %q, want again", got[len(got)-1])
	}
}

func TestMissingGroupIsAnError(t *testing.T) {
	t.Parallel()
	logs := ssmtest.NewLogs(t)
	s := &cwlogs.Sink{Client: client(logs), Group: "/nope"}
	err := s.PutAttemptLog(context.Background(), id, 1, strings.NewReader("x\n"))
	if err == nil || !strings.Contains(err.Error(), "ResourceNotFoundException") {
		t.Errorf("err %v, want the missing group named", err)
	}
}
