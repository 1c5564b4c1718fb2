package ssmtest

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"time"
)

// The agent side of commands: delivery while the instance is Online, at
// most AgentLimit at once, delivery timeouts, and ListCommandInvocations.

// DefaultAgentLimit is the SSM agent's default CommandWorkersLimit.
const DefaultAgentLimit = 5

func (inst *Instance) agentLimit() int {
	if inst.AgentLimit > 0 {
		return inst.AgentLimit
	}
	return DefaultAgentLimit
}

// pump starts the agent on the instance's pending commands, oldest first,
// while it is Online and under its limit. s.mu is held.
func (s *Server) pump(id string) {
	inst := s.instances[id]
	if s.agent == nil || s.closed || inst == nil || inst.Ping != "Online" {
		return
	}
	for i := range s.commands {
		if s.running[id] >= inst.agentLimit() {
			return
		}
		c := &s.commands[i]
		if c.Instance != id || c.Status != "Pending" {
			continue
		}
		c.Status = "InProgress"
		s.running[id]++
		s.peak[id] = max(s.peak[id], s.running[id])
		s.agents.Add(1)
		go func(i int, c Command) {
			defer s.agents.Done()
			status := s.agent(c)
			s.mu.Lock()
			defer s.mu.Unlock()
			s.commands[i].Status = status
			s.running[c.Instance]--
			s.cond.Broadcast()
			s.pump(c.Instance)
		}(i, *c)
	}
}

// online makes a started instance running and Online, and delivers its
// pending commands. s.mu is held.
func (s *Server) online(id string) {
	inst := s.instances[id]
	inst.State, inst.Ping = "running", "Online"
	s.pump(id)
}

// Advance moves the server's clock forward by d: pending commands whose
// delivery timeout (TimeoutSeconds) passed end TimedOut, as SSM ends a
// command sent to a stopped instance that was not started in time.
func (s *Server) Advance(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clock += d
	now := s.now()
	for i := range s.commands {
		c := &s.commands[i]
		if c.Status == "Pending" && c.TimeoutSeconds > 0 && now.Sub(c.Sent) >= time.Duration(c.TimeoutSeconds)*time.Second {
			c.Status = "TimedOut"
		}
	}
	s.cond.Broadcast()
}

// Peak returns the most commands the agent of instance id ran at once.
func (s *Server) Peak(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak[id]
}

// Running returns how many commands the agent of instance id runs now.
func (s *Server) Running(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running[id]
}

// SetInstance changes an instance's EC2 state and SSM ping status, as
// when it is stopped or terminated behind the fake's back (a crash, a
// Spot reclaim). Commands pending for it stay pending.
func (s *Server) SetInstance(id, state, ping string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	inst := s.instances[id]
	if inst == nil {
		s.t.Fatalf("ssmtest: no instance %s", id)
	}
	inst.State, inst.Ping = state, ping
	s.pump(id)
}

// executing says whether a command status is of the Executing stage.
func executing(status string) bool {
	return status == "Pending" || status == "InProgress" || status == "Delayed"
}

func (s *Server) listCommandInvocations(w http.ResponseWriter, body []byte) {
	var in struct {
		CommandId  string
		InstanceId string
		Filters    []struct{ Key, Value string }
		MaxResults *int
		NextToken  string
	}
	if err := json.Unmarshal(body, &in); err != nil {
		s.t.Errorf("ListCommandInvocations body %s: %v", body, err)
	}
	if in.MaxResults != nil && (*in.MaxResults < 1 || *in.MaxResults > 50) {
		ssmError(w, &Error{400, "ValidationException", "MaxResults must be between 1 and 50"})
		return
	}
	var match []Command
	for _, c := range s.commands {
		if in.CommandId != "" && c.ID != in.CommandId || in.InstanceId != "" && c.Instance != in.InstanceId {
			continue
		}
		ok := true
		for _, f := range in.Filters {
			switch f.Key {
			case "ExecutionStage":
				if f.Value != "Executing" && f.Value != "Complete" {
					ssmError(w, &Error{400, "InvalidFilterValue", "ExecutionStage must be Executing or Complete"})
					return
				}
				ok = ok && executing(c.Status) == (f.Value == "Executing")
			case "Status":
				ok = ok && c.Status == f.Value
			case "DocumentName":
				ok = ok && c.Document == f.Value
			case "InvokedAfter", "InvokedBefore":
				t, err := time.Parse(time.RFC3339, f.Value)
				if err != nil {
					ssmError(w, &Error{400, "InvalidFilterValue", f.Key + " must be a date-time: " + f.Value})
					return
				}
				ok = ok && (f.Key == "InvokedAfter" && !c.Sent.Before(t) || f.Key == "InvokedBefore" && !c.Sent.After(t))
			default:
				ssmError(w, &Error{400, "InvalidFilterKey", "unsupported filter key " + f.Key})
				return
			}
		}
		if ok {
			match = append(match, c)
		}
	}
	// Newest first, as SSM lists them.
	slices.Reverse(match)
	size := 50
	if in.MaxResults != nil {
		size = *in.MaxResults
	}
	start, _ := strconv.Atoi(in.NextToken)
	start = min(start, len(match))
	end := min(start+size, len(match))
	type invocation struct {
		CommandId, InstanceId, DocumentName, Status, StatusDetails, Comment string
		RequestedDateTime                                                   float64
	}
	out := struct {
		CommandInvocations []invocation
		NextToken          string `json:",omitempty"`
	}{CommandInvocations: []invocation{}}
	for _, c := range match[start:end] {
		details := c.Status
		if c.Status == "TimedOut" {
			details = "DeliveryTimedOut"
		}
		out.CommandInvocations = append(out.CommandInvocations, invocation{
			CommandId: c.ID, InstanceId: c.Instance, DocumentName: c.Document, Status: c.Status, StatusDetails: details,
			Comment: c.Comment, RequestedDateTime: float64(c.Sent.UnixMilli()) / 1000,
		})
	}
	if end < len(match) {
		out.NextToken = strconv.Itoa(end)
	}
	ssmReply(w, out)
}
