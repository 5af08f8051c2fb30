//go:build !ajv030

package main

// Task signing for the v0.1.2 build. asyncjobs v0.1.2 predates ed25519 task signing (added in v0.3.0: TaskSigningKey,
// TaskVerificationKey, Client.signTask, Client.verifyTaskSignature). This file reproduces v0.3.0's scheme on top of
// v0.1.2's own Task type, so that a v0.1.2 deployment can be shown what signing would store:
//
//   - the signed message is "<id>:<queue>:<type>:<max_tries>:<created UnixNano>:<deadline UnixNano or 0>:<payload
//     in standard base64>" (Task.signatureMessage in v0.3.0's task.go);
//   - the signature is ed25519 over those bytes, hex encoded, stored in the task's "signature" member;
//   - Client.EnqueueTask sets Queue, then signs, then saves and enqueues; Client.LoadTaskByID verifies with
//     ed25519.Verify and refuses unsigned tasks unless signatures are optional.
//
// It is a transcription; the v0.3.0 build (signing_v030.go) uses asyncjobs' own code instead. See docs/asyncjobs.md.

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	aj "github.com/choria-io/asyncjobs"
	"github.com/nats-io/jsm.go"
	"github.com/nats-io/jsm.go/api"
	"github.com/nats-io/nats.go"
)

func signatureMessage(t *aj.Task) []byte {
	var deadline int64
	if t.Deadline != nil {
		deadline = t.Deadline.UnixNano()
	}
	return []byte(fmt.Sprintf("%s:%s:%s:%d:%d:%d:%s", t.ID, t.Queue, t.Type, t.MaxTries, t.CreatedAt.UnixNano(),
		deadline, base64.StdEncoding.EncodeToString(t.Payload)))
}

// signedTask is v0.1.2's task document plus asyncjobs main's "signature" member.
type signedTask struct {
	*aj.Task
	Signature string `json:"signature,omitempty"`
}

// enqueueSigned does what asyncjobs main's Client.EnqueueTask does with a signing key: sign, save the task with
// expected subject sequence 0, then put the work item on the queue with Nats-Msg-Id = task id.
func enqueueSigned(ctx context.Context, f flags, queue string, task *aj.Task, seedHex string) error {
	seed, err := parseSeed(seedHex)
	if err != nil {
		return err
	}
	nc, err := f.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	task.Queue = queue
	sig := ed25519.Sign(seed, signatureMessage(task))
	doc, err := json.Marshal(signedTask{task, hex.EncodeToString(sig)})
	if err != nil {
		return err
	}

	msg := nats.NewMsg(fmt.Sprintf(aj.TasksStreamSubjectPattern, task.ID))
	msg.Header.Set(api.JSExpectedLastSubjSeq, "0")
	msg.Data = doc
	if err := publish(ctx, nc, msg); err != nil {
		return fmt.Errorf("saving task: %w", err)
	}

	item, err := json.Marshal(&aj.ProcessItem{Kind: aj.TaskItem, JobID: task.ID})
	if err != nil {
		return err
	}
	msg = nats.NewMsg(fmt.Sprintf(aj.WorkStreamSubjectPattern, queue, task.ID))
	msg.Header.Set(api.JSMsgId, task.ID)
	msg.Data = item
	if err := publish(ctx, nc, msg); err != nil {
		return fmt.Errorf("enqueueing task: %w", err)
	}

	event, err := aj.NewTaskStateChangeEvent(task)
	if err != nil {
		return err
	}
	ej, err := json.Marshal(event)
	if err != nil {
		return err
	}
	return nc.Publish(fmt.Sprintf(aj.TaskStateChangeEventSubjectPattern, task.ID), ej)
}

func publish(ctx context.Context, nc *nats.Conn, msg *nats.Msg) error {
	resp, err := nc.RequestMsgWithContext(ctx, msg)
	if err != nil {
		return err
	}
	ack, err := jsm.ParsePubAck(resp)
	if err != nil {
		return err
	}
	if ack.Duplicate {
		return aj.ErrDuplicateItem
	}
	return nil
}

// loadSigned reads a task document as stored, signature included (v0.1.2's Task type has no member for it).
func (f flags) loadSigned(id string) (*aj.Task, string, error) {
	nc, err := f.connect()
	if err != nil {
		return nil, "", err
	}
	defer nc.Close()
	mgr, err := jsm.New(nc)
	if err != nil {
		return nil, "", err
	}
	msg, err := mgr.ReadLastMessageForSubject(aj.TasksStreamName, fmt.Sprintf(aj.TasksStreamSubjectPattern, id))
	if err != nil {
		return nil, "", err
	}
	doc := signedTask{Task: &aj.Task{}}
	if err := json.Unmarshal(msg.Data, &doc); err != nil {
		return nil, "", err
	}
	return doc.Task, doc.Signature, nil
}

// verifyTask checks a stored task the way v0.3.0's Client.verifyTaskSignature does, with the same error texts.
func verifyTask(f flags, pub ed25519.PublicKey, optional bool, id string) (map[string]any, error) {
	task, signature, err := f.loadSigned(id)
	if err != nil {
		return nil, err
	}
	result := map[string]any{"task_id": task.ID, "valid": false}
	sig, err := hex.DecodeString(signature)
	switch {
	case signature == "" && optional:
		result["valid"] = true
	case signature == "":
		result["reason"] = "task is not signed"
	case err != nil:
		result["reason"] = "invalid task signature: " + err.Error()
	case !ed25519.Verify(pub, signatureMessage(task), sig):
		result["reason"] = "invalid task signature"
	default:
		result["valid"] = true
	}
	return result, nil
}

// verificationOpts: v0.1.2's client cannot verify, so a processor asked to is refused.
func verificationOpts(string, bool) ([]aj.ClientOpt, error) {
	return nil, errors.New("--verify needs asyncjobs v0.3.0: v0.1.2 has no task signing")
}

func init() {
	commands["sign-message"] = command{signMessageCmd, "print the message a task signature covers (transcription)"}
}

func signMessageCmd(args []string) error {
	f := newFlags("sign-message")
	f.Parse(args)
	if f.NArg() != 1 {
		return errors.New("usage: sign-message ID")
	}
	task, signature, err := f.loadSigned(f.Arg(0))
	if err != nil {
		return err
	}
	emit(map[string]string{"message": string(signatureMessage(task)), "signature": signature})
	return nil
}
