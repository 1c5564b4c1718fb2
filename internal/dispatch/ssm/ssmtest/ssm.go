package ssmtest

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/conveyorhq/conveyor/internal/job"
)

// SSM, JSON 1.1.

func (s *Server) serveSSM(w http.ResponseWriter, r *http.Request, body []byte) {
	if ct := r.Header.Get("Content-Type"); ct != "application/x-amz-json-1.1" {
		s.t.Errorf("SSM request Content-Type %q, want application/x-amz-json-1.1", ct)
	}
	target := r.Header.Get("X-Amz-Target")
	op, ok := strings.CutPrefix(target, "AmazonSSM.")
	if !ok {
		ssmError(w, &Error{400, "UnknownOperationException", "unknown target " + target})
		return
	}
	var params map[string]any
	if err := json.Unmarshal(body, &params); err != nil {
		s.t.Errorf("%s body %s: %v", op, body, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.record(Request{Service: "ssm", Op: op, JSON: params}); e != nil {
		ssmError(w, e)
		return
	}
	switch op {
	case "DescribeInstanceInformation":
		s.describeInstanceInformation(w, body)
	case "SendCommand":
		s.sendCommand(w, body)
	case "ListCommandInvocations":
		s.listCommandInvocations(w, body)
	default:
		s.t.Errorf("unexpected SSM operation %s", op)
		ssmError(w, &Error{400, "UnknownOperationException", op})
	}
}

func ssmError(w http.ResponseWriter, e *Error) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-RequestId", "00000000-0000-4000-8000-000000000001")
	w.WriteHeader(e.Status)
	// Modeled SSM errors carry "Message"; the generic ones "message".
	key := "Message"
	if strings.HasSuffix(e.Code, "Exception") {
		key = "message"
	}
	json.NewEncoder(w).Encode(map[string]string{"__type": e.Code, key: e.Message})
}

func ssmReply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-RequestId", "00000000-0000-4000-8000-000000000002")
	json.NewEncoder(w).Encode(v)
}

func (s *Server) describeInstanceInformation(w http.ResponseWriter, body []byte) {
	var in struct {
		Filters []struct {
			Key    string
			Values []string
		}
		MaxResults *int
		NextToken  string
	}
	if err := json.Unmarshal(body, &in); err != nil {
		s.t.Errorf("DescribeInstanceInformation body %s: %v", body, err)
	}
	if in.MaxResults != nil && (*in.MaxResults < 5 || *in.MaxResults > 50) {
		ssmError(w, &Error{400, "ValidationException", "MaxResults must be between 5 and 50"})
		return
	}
	var ids []string
	for id, inst := range s.instances {
		if inst.Ping == "" {
			continue
		}
		match := true
		for _, flt := range in.Filters {
			switch {
			case flt.Key == "InstanceIds":
				match = match && slices.Contains(flt.Values, id)
			case strings.HasPrefix(flt.Key, "tag:"):
				v, ok := inst.Tags[strings.TrimPrefix(flt.Key, "tag:")]
				match = match && ok && slices.Contains(flt.Values, v)
			default:
				ssmError(w, &Error{400, "InvalidFilterKey", "unsupported filter key " + flt.Key})
				return
			}
		}
		if match {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	start, _ := strconv.Atoi(in.NextToken)
	end := min(start+s.pageSize, len(ids))
	type info struct {
		InstanceId, PingStatus, PlatformType, ResourceType string
		LastPingDateTime                                   float64
	}
	out := struct {
		InstanceInformationList []info
		NextToken               string `json:",omitempty"`
	}{InstanceInformationList: []info{}}
	for _, id := range ids[start:end] {
		inst := s.instances[id]
		if inst.State == "pending" && inst.OnlineAfter > 0 {
			inst.OnlineAfter--
			if inst.OnlineAfter == 0 {
				s.online(id)
			}
		}
		out.InstanceInformationList = append(out.InstanceInformationList, info{
			InstanceId: id, PingStatus: inst.Ping, PlatformType: "Linux", ResourceType: "EC2Instance",
			LastPingDateTime: 1.7e9,
		})
	}
	if end < len(ids) {
		out.NextToken = strconv.Itoa(end)
	}
	ssmReply(w, out)
}

// sendCommandInput is the JSON the SDK sends for SendCommand.
type sendCommandInput struct {
	DocumentName           string
	InstanceIds            []string
	Targets                []json.RawMessage
	Parameters             map[string][]string
	TimeoutSeconds         *int
	Comment                string
	CloudWatchOutputConfig *struct {
		CloudWatchLogGroupName  string
		CloudWatchOutputEnabled bool
	}
}

func (s *Server) sendCommand(w http.ResponseWriter, body []byte) {
	var in sendCommandInput
	if err := json.Unmarshal(body, &in); err != nil {
		s.t.Errorf("SendCommand body %s: %v", body, err)
	}
	if s.want != nil {
		s.checkSend(in, body)
	}
	if len(in.InstanceIds) != 1 {
		ssmError(w, &Error{400, "InvalidInstanceId", "expected one instance"})
		return
	}
	id := in.InstanceIds[0]
	// SSM accepts a command for a registered instance that is running,
	// pending, stopping or stopped: it is delivered when the agent comes
	// back, or times out.
	if inst := s.instances[id]; inst == nil || inst.Ping == "" || inst.State == "terminated" || inst.State == "shutting-down" {
		ssmError(w, InvalidInstanceID(id))
		return
	}
	n := len(s.commands) + 1
	c := Command{
		ID: fmt.Sprintf("%08x-0000-4000-8000-%012x", n, n), Instance: id,
		Document: in.DocumentName, InstanceIDs: in.InstanceIds, Targets: in.Targets,
		Parameters: in.Parameters, Comment: in.Comment, Status: "Pending", Sent: s.now(),
	}
	if v := in.Parameters["JobId"]; len(v) == 1 {
		c.JobID = v[0]
	}
	if in.TimeoutSeconds != nil {
		c.TimeoutSeconds = *in.TimeoutSeconds
	}
	if cw := in.CloudWatchOutputConfig; cw != nil {
		c.LogGroup, c.CloudWatch = cw.CloudWatchLogGroupName, cw.CloudWatchOutputEnabled
	}
	for _, o := range s.commands {
		if o.Instance == id && executing(o.Status) {
			c.Busy++
		}
	}
	s.commands = append(s.commands, c)
	s.cond.Broadcast()
	s.pump(id)
	ssmReply(w, map[string]any{"Command": map[string]any{
		"CommandId":         c.ID,
		"DocumentName":      in.DocumentName,
		"InstanceIds":       in.InstanceIds,
		"Parameters":        in.Parameters,
		"Status":            "Pending",
		"TimeoutSeconds":    in.TimeoutSeconds,
		"RequestedDateTime": 1.7e9,
		"ExpiresAfter":      1.7e9 + 600,
		"Comment":           in.Comment,
		"TargetCount":       1,
	}})
}

// checkSend holds a SendCommand to Options.Want and to what every
// Conveyor job command is: one instance ID, exactly the document's two
// parameters, one valid job ID, a comment naming it.
func (s *Server) checkSend(in sendCommandInput, raw []byte) {
	t, want := s.t, s.want
	if in.DocumentName != want.Document {
		t.Errorf("SendCommand DocumentName %q, want %q", in.DocumentName, want.Document)
	}
	if len(in.Targets) != 0 {
		t.Errorf("SendCommand uses Targets %s: the driver targets one instance ID", raw)
	}
	keys := slices.Sorted(maps.Keys(in.Parameters))
	if !slices.Equal(keys, []string{"ExecutionTimeout", "JobId"}) {
		t.Errorf("SendCommand parameters %v, want exactly ExecutionTimeout and JobId", keys)
	}
	if v := in.Parameters["JobId"]; len(v) != 1 || !job.ValidID(v[0]) {
		t.Errorf("SendCommand JobId %q is not exactly one valid job ID", v)
	} else if want := "conveyor job " + v[0]; in.Comment != want {
		t.Errorf("SendCommand Comment %q, want %q", in.Comment, want)
	}
	if v := in.Parameters["ExecutionTimeout"]; len(v) != 1 || v[0] != want.ExecutionTimeout {
		t.Errorf("SendCommand ExecutionTimeout %q, want [%s]", v, want.ExecutionTimeout)
	}
	if in.TimeoutSeconds == nil || *in.TimeoutSeconds != want.TimeoutSeconds {
		t.Errorf("SendCommand TimeoutSeconds %v, want %d", in.TimeoutSeconds, want.TimeoutSeconds)
	}
	cw := in.CloudWatchOutputConfig
	switch {
	case want.LogGroup == "" && cw != nil:
		t.Errorf("SendCommand CloudWatchOutputConfig %+v, want none", *cw)
	case want.LogGroup != "" && (cw == nil || !cw.CloudWatchOutputEnabled || cw.CloudWatchLogGroupName != want.LogGroup):
		t.Errorf("SendCommand CloudWatchOutputConfig %+v, want enabled to %q", cw, want.LogGroup)
	}
}
