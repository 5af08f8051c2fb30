//go:build ajv030

package main

// Task signing for the v0.3.0 build: nothing here signs or verifies by itself. Enqueueing goes through
// Client.EnqueueTask with TaskSigningKey (asyncjobs' Task.sign), verification through Client.LoadTaskByID with
// TaskVerificationKey (asyncjobs' Client.verifyTaskSignature), so the tests exercise asyncjobs' own code.

import (
	"context"
	"crypto/ed25519"
	"errors"

	aj "github.com/choria-io/asyncjobs"
)

func enqueueSigned(ctx context.Context, f flags, queue string, task *aj.Task, seedHex string) error {
	key, err := parseSeed(seedHex)
	if err != nil {
		return err
	}
	client, nc, err := f.client(aj.BindWorkQueue(queue), aj.TaskSigningKey(key))
	if err != nil {
		return err
	}
	defer nc.Close()
	return client.EnqueueTask(ctx, task)
}

func verificationClientOpts(pub ed25519.PublicKey, optional bool) []aj.ClientOpt {
	opts := []aj.ClientOpt{aj.TaskVerificationKey(pub)}
	if optional {
		opts = append(opts, aj.TaskSignaturesOptional())
	}
	return opts
}

// verifyTask loads the task with asyncjobs' LoadTaskByID on a client holding the verification key.
func verifyTask(f flags, pub ed25519.PublicKey, optional bool, id string) (map[string]any, error) {
	client, done, err := f.loader(verificationClientOpts(pub, optional)...)
	if err != nil {
		return nil, err
	}
	defer done()
	result := map[string]any{"task_id": id, "valid": false}
	_, err = client.LoadTaskByID(id)
	switch {
	case err == nil:
		result["valid"] = true
	case errors.Is(err, aj.ErrTaskNotSigned), errors.Is(err, aj.ErrTaskSignatureInvalid):
		result["reason"] = err.Error()
	default:
		return nil, err
	}
	return result, nil
}

// verificationOpts makes a processor's client verify every task it loads (its LoadTaskByID refuses bad ones).
func verificationOpts(pubHex string, optional bool) ([]aj.ClientOpt, error) {
	pub, err := parsePub(pubHex)
	if err != nil {
		return nil, err
	}
	return verificationClientOpts(pub, optional), nil
}
