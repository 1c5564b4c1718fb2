package ssm

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/conveyorhq/conveyor/internal/job"
)

// fakeAWS answers SSM (JSON 1.1) and EC2 (query protocol, XML) the way the
// services do, keeps a small model of the instances, and records every
// request. Requests that break what the driver promises fail the test.
type fakeAWS struct {
	t    *testing.T
	srv  *httptest.Server
	want sendWant

	// fail, when set, can fail the n-th call (1-based) of an operation
	// with an error the service would send.
	fail func(op string, n int) *wireError
	// pageSize is how many instances DescribeInstanceInformation returns
	// per page at most.
	pageSize int

	mu        sync.Mutex
	cond      *sync.Cond
	instances map[string]*fakeInstance
	calls     map[string]int
	ops       []string // every operation, in order
	sent      []sentCommand
}

// sendWant is what every SendCommand must carry besides the job and target.
type sendWant struct {
	Document         string
	ExecutionTimeout string
	TimeoutSeconds   int
	LogGroup         string // "" means CloudWatch output is not configured
}

// fakeInstance is one EC2 instance and its SSM registration.
type fakeInstance struct {
	tags  map[string]string
	state string // EC2 state: pending, running, stopping, stopped
	ping  string // SSM PingStatus; "" when the instance never registered
	// onlineAfter counts the DescribeInstanceInformation calls, after
	// StartInstances, until the agent reports Online; -1 is never.
	onlineAfter int
}

// sentCommand is one accepted SendCommand.
type sentCommand struct {
	CommandID string
	Instance  string
	JobID     string
	Body      sendCommandBody
}

// sendCommandBody is the JSON the SDK sends for SendCommand.
type sendCommandBody struct {
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

// wireError is an error response: JSON for SSM, XML for EC2.
type wireError struct {
	Status  int
	Code    string // may carry a namespace: "com.amazonaws.ssm#InvalidDocument"
	Message string
}

func throttled(op string) *wireError {
	if op == "DescribeInstances" || op == "StartInstances" {
		return &wireError{503, "RequestLimitExceeded", "Request limit exceeded."}
	}
	return &wireError{400, "ThrottlingException", "Rate exceeded"}
}

func newFakeAWS(t *testing.T, want sendWant, instances map[string]*fakeInstance) *fakeAWS {
	f := &fakeAWS{t: t, want: want, instances: instances, calls: map[string]int{}, pageSize: 50}
	f.cond = sync.NewCond(&f.mu)
	f.srv = httptest.NewServer(f)
	t.Cleanup(f.srv.Close)
	return f
}

// clients returns SDK clients pointed at the fake. Their own retryer
// makes 3 attempts without sleeping: the driver must replace it with its
// Throttle, so a test counting attempts sees Throttle.MaxAttempts, never
// 3 nor 3 times MaxAttempts.
func (f *fakeAWS) clients() (*ssm.Client, *ec2.Client) {
	creds := credentials.NewStaticCredentialsProvider("AKIDCONVEYORTEST", "secret", "")
	clientRetryer := func() aws.Retryer {
		return retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = 3
			o.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 0, nil })
		})
	}
	sc := ssm.New(ssm.Options{Region: "us-east-1", BaseEndpoint: aws.String(f.srv.URL), Credentials: creds, Retryer: clientRetryer(), RetryMaxAttempts: 3})
	ec := ec2.New(ec2.Options{Region: "us-east-1", BaseEndpoint: aws.String(f.srv.URL), Credentials: creds, Retryer: clientRetryer(), RetryMaxAttempts: 3})
	return sc, ec
}

func (f *fakeAWS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if r.Method != http.MethodPost || r.URL.Path != "/" {
		f.t.Errorf("%s %s: AWS JSON and query protocols POST to /", r.Method, r.URL.Path)
	}
	service := "ec2"
	if r.Header.Get("X-Amz-Target") != "" {
		service = "ssm"
	}
	if auth := r.Header.Get("Authorization"); !strings.HasPrefix(auth, "AWS4-HMAC-SHA256 Credential=AKIDCONVEYORTEST/") ||
		!strings.Contains(auth, "/us-east-1/"+service+"/aws4_request") {
		f.t.Errorf("request not signed with SigV4 for %s in us-east-1: %q", service, auth)
	}
	if service == "ssm" {
		f.serveSSM(w, r, body)
	} else {
		f.serveEC2(w, r, body)
	}
}

// count records a call and returns its number and the injected error.
func (f *fakeAWS) count(op string) *wireError {
	f.calls[op]++
	f.ops = append(f.ops, op)
	if f.fail != nil {
		return f.fail(op, f.calls[op])
	}
	return nil
}

// Calls returns how many times op was called.
func (f *fakeAWS) Calls(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

// Ops returns every operation called, in order.
func (f *fakeAWS) Ops() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ops)
}

// Sent returns the accepted commands.
func (f *fakeAWS) Sent() []sentCommand {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.sent)
}

// Delivered is dispatchtest's Harness.Delivered: the JobId parameters of
// the accepted commands, once there are n or bound passed.
func (f *fakeAWS) Delivered(n int, bound time.Duration) []string {
	stop := time.AfterFunc(bound, func() { f.mu.Lock(); f.cond.Broadcast(); f.mu.Unlock() })
	defer stop.Stop()
	end := time.Now().Add(bound)
	f.mu.Lock()
	defer f.mu.Unlock()
	for len(f.sent) < n && time.Now().Before(end) {
		f.cond.Wait()
	}
	var ids []string
	for _, c := range f.sent {
		ids = append(ids, c.JobID)
	}
	return ids
}

// --- SSM, JSON 1.1 ---

func (f *fakeAWS) serveSSM(w http.ResponseWriter, r *http.Request, body []byte) {
	if ct := r.Header.Get("Content-Type"); ct != "application/x-amz-json-1.1" {
		f.t.Errorf("SSM request Content-Type %q, want application/x-amz-json-1.1", ct)
	}
	target := r.Header.Get("X-Amz-Target")
	op, ok := strings.CutPrefix(target, "AmazonSSM.")
	if !ok {
		f.ssmError(w, &wireError{400, "UnknownOperationException", "unknown target " + target})
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if e := f.count(op); e != nil {
		f.ssmError(w, e)
		return
	}
	switch op {
	case "DescribeInstanceInformation":
		f.describeInstanceInformation(w, body)
	case "SendCommand":
		f.sendCommand(w, body)
	default:
		f.t.Errorf("unexpected SSM operation %s", op)
		f.ssmError(w, &wireError{400, "UnknownOperationException", op})
	}
}

func (f *fakeAWS) ssmError(w http.ResponseWriter, e *wireError) {
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

func (f *fakeAWS) ssmReply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-RequestId", "00000000-0000-4000-8000-000000000002")
	json.NewEncoder(w).Encode(v)
}

func (f *fakeAWS) describeInstanceInformation(w http.ResponseWriter, body []byte) {
	var in struct {
		Filters []struct {
			Key    string
			Values []string
		}
		MaxResults *int
		NextToken  string
	}
	if err := json.Unmarshal(body, &in); err != nil {
		f.t.Errorf("DescribeInstanceInformation body %s: %v", body, err)
	}
	if in.MaxResults != nil && (*in.MaxResults < 5 || *in.MaxResults > 50) {
		f.ssmError(w, &wireError{400, "ValidationException", "MaxResults must be between 5 and 50"})
		return
	}
	var ids []string
	for id, inst := range f.instances {
		if inst.ping == "" {
			continue
		}
		match := true
		for _, flt := range in.Filters {
			switch {
			case flt.Key == "InstanceIds":
				match = match && slices.Contains(flt.Values, id)
			case strings.HasPrefix(flt.Key, "tag:"):
				v, ok := inst.tags[strings.TrimPrefix(flt.Key, "tag:")]
				match = match && ok && slices.Contains(flt.Values, v)
			default:
				f.ssmError(w, &wireError{400, "InvalidFilterKey", "unsupported filter key " + flt.Key})
				return
			}
		}
		if match {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	start, _ := strconv.Atoi(in.NextToken)
	end := min(start+f.pageSize, len(ids))
	type info struct {
		InstanceId, PingStatus, PlatformType, ResourceType string
		LastPingDateTime                                   float64
	}
	out := struct {
		InstanceInformationList []info
		NextToken               string `json:",omitempty"`
	}{InstanceInformationList: []info{}}
	for _, id := range ids[start:end] {
		inst := f.instances[id]
		if inst.state == "pending" && inst.onlineAfter > 0 {
			inst.onlineAfter--
			if inst.onlineAfter == 0 {
				inst.state, inst.ping = "running", "Online"
			}
		}
		out.InstanceInformationList = append(out.InstanceInformationList, info{
			InstanceId: id, PingStatus: inst.ping, PlatformType: "Linux", ResourceType: "EC2Instance",
			LastPingDateTime: 1.7e9,
		})
	}
	if end < len(ids) {
		out.NextToken = strconv.Itoa(end)
	}
	f.ssmReply(w, out)
}

func (f *fakeAWS) sendCommand(w http.ResponseWriter, body []byte) {
	var in sendCommandBody
	if err := json.Unmarshal(body, &in); err != nil {
		f.t.Errorf("SendCommand body %s: %v", body, err)
	}
	f.checkSend(in, body)
	if len(in.InstanceIds) != 1 {
		f.ssmError(w, &wireError{400, "InvalidInstanceId", "expected one instance"})
		return
	}
	id := in.InstanceIds[0]
	if inst := f.instances[id]; inst == nil || inst.ping != "Online" {
		// What SSM answers for an instance that is unknown, stopped or
		// whose agent is not connected.
		f.ssmError(w, &wireError{400, "InvalidInstanceId", "Instances [[" + id + "]] not in a valid state for account 123456789012"})
		return
	}
	jobID := ""
	if v := in.Parameters["JobId"]; len(v) == 1 {
		jobID = v[0]
	}
	c := sentCommand{CommandID: fmt.Sprintf("%08x-0000-4000-8000-%012x", len(f.sent)+1, len(f.sent)+1), Instance: id, JobID: jobID, Body: in}
	f.sent = append(f.sent, c)
	f.cond.Broadcast()
	f.ssmReply(w, map[string]any{"Command": map[string]any{
		"CommandId":         c.CommandID,
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

// checkSend holds every SendCommand to the driver's promises.
func (f *fakeAWS) checkSend(in sendCommandBody, raw []byte) {
	t := f.t
	if in.DocumentName != f.want.Document {
		t.Errorf("SendCommand DocumentName %q, want %q", in.DocumentName, f.want.Document)
	}
	if len(in.Targets) != 0 {
		t.Errorf("SendCommand uses Targets %s: the driver targets one instance ID", raw)
	}
	var keys []string
	for k := range in.Parameters {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"ExecutionTimeout", "JobId"}) {
		t.Errorf("SendCommand parameters %v, want exactly ExecutionTimeout and JobId", keys)
	}
	if v := in.Parameters["JobId"]; len(v) != 1 || !job.ValidID(v[0]) {
		t.Errorf("SendCommand JobId %q is not exactly one valid job ID", v)
	} else if want := "conveyor job " + v[0]; in.Comment != want {
		t.Errorf("SendCommand Comment %q, want %q", in.Comment, want)
	}
	if v := in.Parameters["ExecutionTimeout"]; len(v) != 1 || v[0] != f.want.ExecutionTimeout {
		t.Errorf("SendCommand ExecutionTimeout %q, want [%s]", v, f.want.ExecutionTimeout)
	}
	if in.TimeoutSeconds == nil || *in.TimeoutSeconds != f.want.TimeoutSeconds {
		t.Errorf("SendCommand TimeoutSeconds %v, want %d", in.TimeoutSeconds, f.want.TimeoutSeconds)
	}
	cw := in.CloudWatchOutputConfig
	switch {
	case f.want.LogGroup == "" && cw != nil:
		t.Errorf("SendCommand CloudWatchOutputConfig %+v, want none", *cw)
	case f.want.LogGroup != "" && (cw == nil || !cw.CloudWatchOutputEnabled || cw.CloudWatchLogGroupName != f.want.LogGroup):
		t.Errorf("SendCommand CloudWatchOutputConfig %+v, want enabled to %q", cw, f.want.LogGroup)
	}
}

// --- EC2, query protocol ---

const ec2Namespace = "http://ec2.amazonaws.com/doc/2016-11-15/"

func (f *fakeAWS) serveEC2(w http.ResponseWriter, r *http.Request, body []byte) {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
		f.t.Errorf("EC2 request Content-Type %q, want application/x-www-form-urlencoded", ct)
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		f.t.Errorf("EC2 body %q: %v", body, err)
	}
	if v := form.Get("Version"); v != "2016-11-15" {
		f.t.Errorf("EC2 Version %q, want 2016-11-15", v)
	}
	op := form.Get("Action")
	f.mu.Lock()
	defer f.mu.Unlock()
	if e := f.count(op); e != nil {
		f.ec2Error(w, e)
		return
	}
	switch op {
	case "DescribeInstances":
		f.describeInstances(w, form)
	case "StartInstances":
		f.startInstances(w, form)
	default:
		f.t.Errorf("unexpected EC2 action %s", op)
		f.ec2Error(w, &wireError{400, "InvalidAction", "The action " + op + " is not valid for this web service."})
	}
}

func (f *fakeAWS) ec2Error(w http.ResponseWriter, e *wireError) {
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.WriteHeader(e.Status)
	type xmlErr struct {
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	}
	out, _ := xml.Marshal(struct {
		XMLName   xml.Name `xml:"Response"`
		Errors    []xmlErr `xml:"Errors>Error"`
		RequestID string   `xml:"RequestID"`
	}{Errors: []xmlErr{{e.Code, e.Message}}, RequestID: "00000000-0000-4000-8000-000000000003"})
	io.WriteString(w, xml.Header)
	w.Write(out)
}

func (f *fakeAWS) ec2Reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	out, err := xml.Marshal(v)
	if err != nil {
		f.t.Errorf("marshal EC2 reply: %v", err)
	}
	io.WriteString(w, xml.Header)
	w.Write(out)
}

// listParam returns the values of a query list: InstanceId.1, InstanceId.2...
func listParam(form url.Values, prefix string) []string {
	var vs []string
	for i := 1; form.Has(prefix + "." + strconv.Itoa(i)); i++ {
		vs = append(vs, form.Get(prefix+"."+strconv.Itoa(i)))
	}
	return vs
}

type ec2State struct {
	Code int    `xml:"code"`
	Name string `xml:"name"`
}

var ec2StateCodes = map[string]int{"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80}

func stateOf(name string) ec2State { return ec2State{ec2StateCodes[name], name} }

func (f *fakeAWS) describeInstances(w http.ResponseWriter, form url.Values) {
	type tag struct {
		Key   string `xml:"key"`
		Value string `xml:"value"`
	}
	type instance struct {
		InstanceID string   `xml:"instanceId"`
		State      ec2State `xml:"instanceState"`
		Tags       []tag    `xml:"tagSet>item"`
	}
	type reservation struct {
		ReservationID string     `xml:"reservationId"`
		OwnerID       string     `xml:"ownerId"`
		Instances     []instance `xml:"instancesSet>item"`
	}
	ids := listParam(form, "InstanceId")
	for _, id := range ids {
		if f.instances[id] == nil {
			f.ec2Error(w, &wireError{400, "InvalidInstanceID.NotFound", "The instance ID '" + id + "' does not exist"})
			return
		}
	}
	filters := map[string][]string{}
	for i := 1; form.Has("Filter." + strconv.Itoa(i) + ".Name"); i++ {
		p := "Filter." + strconv.Itoa(i)
		filters[form.Get(p+".Name")] = listParam(form, p+".Value")
	}
	var names []string
	for id := range f.instances {
		names = append(names, id)
	}
	slices.Sort(names)
	var res []reservation
	for _, id := range names {
		inst := f.instances[id]
		if len(ids) > 0 && !slices.Contains(ids, id) {
			continue
		}
		match := true
		for name, values := range filters {
			switch {
			case name == "instance-state-name":
				match = match && slices.Contains(values, inst.state)
			case strings.HasPrefix(name, "tag:"):
				v, ok := inst.tags[strings.TrimPrefix(name, "tag:")]
				match = match && ok && slices.Contains(values, v)
			default:
				f.ec2Error(w, &wireError{400, "InvalidParameterValue", "The filter '" + name + "' is invalid"})
				return
			}
		}
		if !match {
			continue
		}
		x := instance{InstanceID: id, State: stateOf(inst.state)}
		for k, v := range inst.tags {
			x.Tags = append(x.Tags, tag{k, v})
		}
		res = append(res, reservation{"r-" + id[2:], "123456789012", []instance{x}})
	}
	f.ec2Reply(w, struct {
		XMLName      xml.Name      `xml:"DescribeInstancesResponse"`
		Xmlns        string        `xml:"xmlns,attr"`
		RequestID    string        `xml:"requestId"`
		Reservations []reservation `xml:"reservationSet>item"`
	}{Xmlns: ec2Namespace, RequestID: "00000000-0000-4000-8000-000000000004", Reservations: res})
}

func (f *fakeAWS) startInstances(w http.ResponseWriter, form url.Values) {
	type change struct {
		InstanceID string   `xml:"instanceId"`
		Current    ec2State `xml:"currentState"`
		Previous   ec2State `xml:"previousState"`
	}
	ids := listParam(form, "InstanceId")
	var changes []change
	for _, id := range ids {
		inst := f.instances[id]
		if inst == nil {
			f.ec2Error(w, &wireError{400, "InvalidInstanceID.NotFound", "The instance ID '" + id + "' does not exist"})
			return
		}
		if inst.state == "stopping" {
			f.ec2Error(w, &wireError{400, "IncorrectInstanceState", "The instance '" + id + "' is not in a state from which it can be started."})
			return
		}
		prev := inst.state
		if prev == "stopped" {
			inst.state = "pending"
		}
		changes = append(changes, change{id, stateOf(inst.state), stateOf(prev)})
	}
	f.ec2Reply(w, struct {
		XMLName   xml.Name `xml:"StartInstancesResponse"`
		Xmlns     string   `xml:"xmlns,attr"`
		RequestID string   `xml:"requestId"`
		Instances []change `xml:"instancesSet>item"`
	}{Xmlns: ec2Namespace, RequestID: "00000000-0000-4000-8000-000000000005", Instances: changes})
}
