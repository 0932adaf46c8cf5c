import type { Provider } from "./provider";
import { seismic } from "./seismic";
import { zuddl } from "./zuddl";

/** Every provider the gateway receives from; adding one is a new module plus one line here. */
export const providers: readonly Provider[] = [seismic, zuddl];

const byName = new Map(providers.map((provider) => [provider.name, provider]));

export function findProvider(name: string): Provider | undefined {
  return byName.get(name);
}
