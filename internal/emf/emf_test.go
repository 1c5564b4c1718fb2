package emf_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/conveyorhq/conveyor/internal/emf"
)

func TestLineExtractsAsCloudWatchDoes(t *testing.T) {
	t.Parallel()
	now := time.UnixMilli(1764586850123)
	b, err := emf.Line{
		Namespace:     "Conveyor",
		DimensionSets: [][]string{{"StateBucket"}, {"StateBucket", "Function"}},
		Dimensions:    map[string]string{"StateBucket": "st", "Function": "f"},
		Metrics:       []emf.Metric{{"JobsCreated", emf.Count, 3}, {"AttemptDuration", emf.Milliseconds, 1500}},
		Fields:        map[string]any{"msg": "invocation", "jobId": "x"},
	}.Marshal(now)
	if err != nil {
		t.Fatal(err)
	}
	data, err := emf.Extract(b)
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	want := []emf.Datum{
		{Namespace: "Conveyor", Dimensions: map[string]string{"StateBucket": "st"}, Name: "JobsCreated", Unit: "Count", Values: []float64{3}, Timestamp: now},
		{Namespace: "Conveyor", Dimensions: map[string]string{"StateBucket": "st"}, Name: "AttemptDuration", Unit: "Milliseconds", Values: []float64{1500}, Timestamp: now},
		{Namespace: "Conveyor", Dimensions: map[string]string{"StateBucket": "st", "Function": "f"}, Name: "JobsCreated", Unit: "Count", Values: []float64{3}, Timestamp: now},
		{Namespace: "Conveyor", Dimensions: map[string]string{"StateBucket": "st", "Function": "f"}, Name: "AttemptDuration", Unit: "Milliseconds", Values: []float64{1500}, Timestamp: now},
	}
	if diff := cmp.Diff(want, data); diff != "" {
		t.Errorf("extracted (-want +got):\n%s", diff)
	}
	if strings.Contains(string(b), "\n") {
		t.Errorf("line has a newline: %q", b)
	}
}

func TestExtractRefusesWhatCloudWatchRefuses(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ line, want string }{
		{`{"a":1}`, "no _aws"},
		{`{"_aws":{"CloudWatchMetrics":[{"Namespace":"N","Dimensions":[[]],"Metrics":[{"Name":"a"}]}]},"a":1}`, "Timestamp"},
		{`{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"N","Dimensions":[["D"]],"Metrics":[{"Name":"a"}]}]},"a":1}`, "dimension D"},
		{`{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"N","Dimensions":[[]],"Metrics":[{"Name":"a"}]}]},"a":"1"}`, "metric a"},
		{`{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"","Dimensions":[[]],"Metrics":[{"Name":"a"}]}]},"a":1}`, "namespace"},
	} {
		if _, err := emf.Extract([]byte(tt.line)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want an error about %s", tt.line, err, tt.want)
		}
	}
	// A missing dimension value is refused when writing.
	if _, err := (emf.Line{Namespace: "N", DimensionSets: [][]string{{"D"}}, Metrics: []emf.Metric{{"a", emf.Count, 1}}}).Marshal(time.Now()); err == nil {
		t.Error("a dimension without a value was written")
	}
}
