/** Paths the tests need, from the compiled file's place (dist/test/helpers) back to the package and the repo. */
import { fileURLToPath } from "node:url";
import { join } from "node:path";

/** interop/node */
export const packageRoot = fileURLToPath(new URL("../../../", import.meta.url));
/** The repository root. */
export const repoRoot = join(packageRoot, "../..");
/** The shared vectors, `../../protocol/vectors` from the package. */
export const vectorsDir = join(packageRoot, "../../protocol/vectors");
export const schemasDir = join(packageRoot, "../../protocol/schemas");
