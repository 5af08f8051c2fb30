package main

// Task signing. The newest asyncjobs release the Go module proxy serves (v0.1.2, pinned in go.mod) predates
// asyncjobs' ed25519 task signing, which so far exists only on its main branch (TaskSigningKey,
// TaskVerificationKey, Client.signTask, Client.verifyTaskSignature). This file reproduces that branch's scheme
// on top of v0.1.2's own Task type, so Jetbridge's signatures can be checked against an independent Go
// implementation:
//
//   - the signed message is "<id>:<queue>:<type>:<max_tries>:<created UnixNano>:<deadline UnixNano or 0>:<payload
//     in standard base64>" (Task.signatureMessage on asyncjobs main, as read from its source);
//   - the signature is ed25519 over those bytes, hex encoded, stored in the task's "signature" member;
//   - Client.EnqueueTask sets Queue, then signs, then saves and enqueues; Client.LoadTaskByID verifies with
//     ed25519.Verify and refuses unsigned tasks unless signatures are optional.
//
// It is a transcription, not asyncjobs' code: see docs/asyncjobs.md.

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
func enqueueSigned(ctx context.Context, nc *nats.Conn, queue string, task *aj.Task, seedHex string) error {
	seed, err := hex.DecodeString(seedHex)
	if err != nil || len(seed) != ed25519.SeedSize {
		return errors.New("--sign must be a 64 character hex ed25519 seed")
	}
	task.Queue = queue
	sig := ed25519.Sign(ed25519.NewKeyFromSeed(seed), signatureMessage(task))
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

// verify checks a stored task the way asyncjobs main's Client.verifyTaskSignature does (signatures required).
func verify(args []string) error {
	f := newFlags("verify")
	pubHex := f.String("pub", "", "hex ed25519 public key")
	f.Parse(args)
	pub, err := hex.DecodeString(*pubHex)
	if err != nil || len(pub) != ed25519.PublicKeySize || f.NArg() != 1 {
		return errors.New("usage: verify --pub PUBHEX ID (a 64 character hex public key)")
	}
	task, signature, err := f.loadSigned(f.Arg(0))
	if err != nil {
		return err
	}
	result := map[string]any{"task_id": task.ID, "valid": false}
	sig, err := hex.DecodeString(signature)
	switch {
	case signature == "":
		result["reason"] = "task is not signed"
	case err != nil:
		result["reason"] = "signature is not hex: " + err.Error()
	case !ed25519.Verify(pub, signatureMessage(task), sig):
		result["reason"] = "invalid task signature"
	default:
		result["valid"] = true
	}
	emit(result)
	return nil
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
