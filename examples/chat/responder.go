package main

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Prompt is what a Responder answers: one user message in a conversation.
type Prompt struct {
	TenantID       string
	ConversationID int64
	Content        string
}

// Reply is a Responder's answer and what it cost.
type Reply struct {
	Content   string
	Tokens    int32
	CostCents float64
}

// Responder produces the assistant's reply: the AI call in the loop. It is
// called from many goroutines at once and must honour ctx.
type Responder interface {
	Respond(ctx context.Context, p Prompt) (Reply, error)
}

// LocalResponder is the default Responder: deterministic, local, no external
// service. It waits Delay (standing in for the model's latency) and answers
// with a fixed transformation of the prompt.
type LocalResponder struct {
	Delay time.Duration
}

// costPerTokenCents prices LocalResponder's tokens.
const costPerTokenCents = 0.002

// Respond implements Responder.
func (r LocalResponder) Respond(ctx context.Context, p Prompt) (Reply, error) {
	if r.Delay > 0 {
		t := time.NewTimer(r.Delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return Reply{}, ctx.Err()
		}
	}
	words := len(strings.Fields(p.Content))
	tokens := int32(words + len(p.Content)/4 + 1)
	return Reply{
		Content:   fmt.Sprintf("You said %d words (%d bytes).", words, len(p.Content)),
		Tokens:    tokens,
		CostCents: float64(tokens) * costPerTokenCents,
	}, nil
}
