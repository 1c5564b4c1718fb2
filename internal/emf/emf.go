package emf

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// Units used by Conveyor's metrics (CloudWatch has more).
const (
	Count        = "Count"
	Milliseconds = "Milliseconds"
)

// Metric is one value of one metric.
type Metric struct {
	Name  string
	Unit  string
	Value float64
}

// Line is one EMF log line under construction.
type Line struct {
	Namespace string
	// DimensionSets are the sets of dimension names each metric is
	// published under (each a key of Dimensions); none publishes the
	// metrics with no dimension.
	DimensionSets [][]string
	// Dimensions are the dimensions' values.
	Dimensions map[string]string
	Metrics    []Metric
	// Fields are log fields besides: searchable in Logs Insights, not
	// metrics. They must not reuse a metric's or a dimension's name.
	Fields map[string]any
}

// Marshal returns the line, without its newline, stamped with now.
func (l Line) Marshal(now time.Time) ([]byte, error) {
	out := map[string]any{}
	maps.Copy(out, l.Fields)
	type def struct {
		Name string `json:"Name"`
		Unit string `json:"Unit,omitempty"`
	}
	defs := make([]def, 0, len(l.Metrics))
	for _, m := range l.Metrics {
		if _, dup := out[m.Name]; dup {
			return nil, fmt.Errorf("emf: metric %s is named twice or also a field", m.Name)
		}
		out[m.Name] = m.Value
		defs = append(defs, def{m.Name, m.Unit})
	}
	sets := l.DimensionSets
	if sets == nil {
		sets = [][]string{{}}
	}
	for _, set := range sets {
		for _, d := range set {
			v, ok := l.Dimensions[d]
			if !ok || v == "" {
				return nil, fmt.Errorf("emf: dimension %s has no value", d)
			}
			out[d] = v
		}
	}
	out["_aws"] = map[string]any{
		"Timestamp": now.UnixMilli(),
		"CloudWatchMetrics": []any{map[string]any{
			"Namespace":  l.Namespace,
			"Dimensions": sets,
			"Metrics":    defs,
		}},
	}
	return json.Marshal(out)
}

// Datum is one metric value as CloudWatch extracts it from a line.
type Datum struct {
	Namespace  string
	Dimensions map[string]string // the dimension set's names and values
	Name       string
	Unit       string
	Values     []float64
	Timestamp  time.Time
}

// Extract reads one log line as CloudWatch Logs does, and returns the data
// points it yields, or why CloudWatch would reject the line: it needs an
// "_aws" object with a Timestamp in milliseconds and CloudWatchMetrics
// directives, each with a Namespace, Dimensions (arrays of names of
// top-level string members, at most 30 each) and Metrics (at most 100,
// each a top-level number or array of at most 100 numbers).
func Extract(line []byte) ([]Datum, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(line, &top); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	var meta struct {
		Timestamp         *int64 `json:"Timestamp"`
		CloudWatchMetrics []struct {
			Namespace  string     `json:"Namespace"`
			Dimensions [][]string `json:"Dimensions"`
			Metrics    []struct {
				Name string `json:"Name"`
				Unit string `json:"Unit"`
			} `json:"Metrics"`
		} `json:"CloudWatchMetrics"`
	}
	raw, ok := top["_aws"]
	if !ok {
		return nil, errors.New("no _aws member: a log line, not metrics")
	}
	if err := json.Unmarshal(raw, &meta); err != nil {
		return nil, fmt.Errorf("_aws: %w", err)
	}
	if meta.Timestamp == nil {
		return nil, errors.New("_aws.Timestamp is missing")
	}
	if len(meta.CloudWatchMetrics) == 0 {
		return nil, errors.New("_aws.CloudWatchMetrics is empty")
	}
	ts := time.UnixMilli(*meta.Timestamp)
	var out []Datum
	for _, d := range meta.CloudWatchMetrics {
		if d.Namespace == "" || len(d.Namespace) > 255 {
			return nil, fmt.Errorf("namespace %q: want 1 to 255 characters", d.Namespace)
		}
		if d.Dimensions == nil {
			return nil, fmt.Errorf("namespace %s: Dimensions is missing", d.Namespace)
		}
		if len(d.Metrics) == 0 || len(d.Metrics) > 100 {
			return nil, fmt.Errorf("namespace %s: %d metrics, want 1 to 100", d.Namespace, len(d.Metrics))
		}
		for _, set := range d.Dimensions {
			if len(set) > 30 {
				return nil, fmt.Errorf("a dimension set of %d names, want at most 30", len(set))
			}
			dims := map[string]string{}
			for _, name := range set {
				var v string
				if err := json.Unmarshal(top[name], &v); err != nil {
					return nil, fmt.Errorf("dimension %s is not a top-level string member", name)
				}
				dims[name] = v
			}
			for _, m := range d.Metrics {
				values, err := numbers(top[m.Name])
				if err != nil {
					return nil, fmt.Errorf("metric %s: %w", m.Name, err)
				}
				out = append(out, Datum{Namespace: d.Namespace, Dimensions: dims, Name: m.Name, Unit: m.Unit, Values: values, Timestamp: ts})
			}
		}
	}
	return out, nil
}

func numbers(raw json.RawMessage) ([]float64, error) {
	if raw == nil {
		return nil, errors.New("no top-level member of that name")
	}
	var v float64
	if err := json.Unmarshal(raw, &v); err == nil {
		return []float64{v}, nil
	}
	var vs []float64
	if err := json.Unmarshal(raw, &vs); err != nil || len(vs) == 0 || len(vs) > 100 {
		return nil, errors.New("not a number or an array of 1 to 100 numbers")
	}
	return vs, nil
}

// Find returns the data points of name whose dimensions are exactly dims.
func Find(data []Datum, name string, dims map[string]string) []Datum {
	var out []Datum
	for _, d := range data {
		if d.Name == name && maps.Equal(d.Dimensions, dims) {
			out = append(out, d)
		}
	}
	return out
}

// Names returns the metric names in data, sorted, once each.
func Names(data []Datum) []string {
	var names []string
	for _, d := range data {
		if !slices.Contains(names, d.Name) {
			names = append(names, d.Name)
		}
	}
	slices.Sort(names)
	return names
}
