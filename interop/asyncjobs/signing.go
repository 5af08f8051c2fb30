package main

// The signing subcommands both builds share. What signs and verifies differs per build: signing_v030.go calls
// asyncjobs v0.3.0's own TaskSigningKey / TaskVerificationKey code, signing_v012.go carries a transcription of it
// (v0.1.2 has no signing).

import (
	"crypto/ed25519"
	"encoding/hex"
	"errors"
)

func parseSeed(seedHex string) (ed25519.PrivateKey, error) {
	seed, err := hex.DecodeString(seedHex)
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, errors.New("--sign must be a 64 character hex ed25519 seed")
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

func parsePub(pubHex string) (ed25519.PublicKey, error) {
	pub, err := hex.DecodeString(pubHex)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return nil, errors.New("the public key must be 64 hex characters")
	}
	return pub, nil
}

// verify prints, one line per task id, whether asyncjobs (v0.3.0 build) or the transcription (v0.1.2 build) accepts a stored task's
// signature: {"task_id", "valid", "reason"}, reason being asyncjobs' error text.
func verify(args []string) error {
	f := newFlags("verify")
	pubHex := f.String("pub", "", "hex ed25519 public key")
	optional := f.Bool("optional", false, "accept unsigned tasks (asyncjobs' TaskSignaturesOptional)")
	f.Parse(args)
	pub, err := parsePub(*pubHex)
	if err != nil || f.NArg() == 0 {
		return errors.New("usage: verify --pub PUBHEX [--optional] ID... (a 64 character hex public key)")
	}
	for _, id := range f.Args() {
		result, err := verifyTask(f, pub, *optional, id)
		if err != nil {
			return err
		}
		emit(result)
	}
	return nil
}
