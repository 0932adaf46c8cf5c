/**
 * Zuddl: an HMAC-SHA256 of the raw body in `X-Webhook-Signature`, as `sha256=<hex>` or bare
 * hex, and optionally a static token the owner configured, sent in `X-Webhook-Token`.
 * Every action shares one shape (`action`, `actionId`, `actor`, `actionCreatedAt`, …);
 * some add their own fields, such as TIME_SPENT_IN_SESSION's `session` and `timeSpentInMinutes`.
 */
import { array, number, string, type, unknown, type Infer } from "superstruct";
import { HttpError } from "../errors";
import { tokensEqual } from "../crypto";
import { maybe, nonEmpty } from "./compile";
import { check, type ParsedEvent, type Provider } from "./provider";

const Profile = type({
  firstName: maybe(string()),
  lastName: maybe(string()),
  email: maybe(string()),
  company: maybe(string()),
  designation: maybe(string()),
  bio: maybe(string()),
  headline: maybe(string()),
  industry: maybe(string()),
  country: maybe(string()),
  phoneNumber: maybe(string()),
});

export const ZuddlAction = type({
  action: nonEmpty(string()),
  actionId: nonEmpty(string()),
  actor: type({ id: string(), type: string() }),
  actionCreatedAt: string(),
  registration: maybe(type({ id: string(), profile: maybe(Profile) })),
  event: maybe(type({ id: string(), organizationId: maybe(string()), name: maybe(string()) })),
});
export type ZuddlAction = Infer<typeof ZuddlAction>;

export const TimeSpentInSession = type({
  session: type({
    id: string(),
    title: maybe(string()),
    description: maybe(string()),
    startDateTime: maybe(string()),
    endDateTime: maybe(string()),
    location: maybe(type({ locationId: maybe(string()), locationName: maybe(string()), type: maybe(string()), link: maybe(string()) })),
    speakers: maybe(array(type({ speakerId: maybe(string()), url: maybe(string()) }))),
    sponsors: maybe(array(type({ sponsorId: maybe(string()), url: maybe(string()) }))),
    tags: maybe(array(unknown())),
  }),
  timeSpentInMinutes: number(),
});
export type TimeSpentInSession = Infer<typeof TimeSpentInSession>;

/** Action-specific fields, checked on top of the common shape. */
const actionSchemas = new Map([["TIME_SPENT_IN_SESSION", TimeSpentInSession]]);

export const zuddl: Provider = {
  name: "zuddl",

  bindings: { secret: "ZUDDL_SIGNING_SECRET", secretOld: "ZUDDL_SIGNING_SECRET_OLD", token: "ZUDDL_AUTH_TOKEN" },

  signatures(headers) {
    const value = headers.get("x-webhook-signature")?.trim();
    if (value === undefined) return [];
    return [value.toLowerCase().startsWith("sha256=") ? value.slice("sha256=".length) : value];
  },

  authenticate(headers, expected) {
    const given = headers.get("x-webhook-token");
    if (given === null) throw new HttpError(401, "missing_token", "X-Webhook-Token header is required");
    if (!tokensEqual(given, expected)) throw new HttpError(401, "invalid_token", "X-Webhook-Token does not match");
  },

  parse(body): ParsedEvent {
    const action = check(body, ZuddlAction);
    const specific = actionSchemas.get(action.action);
    if (specific) check(body, specific);
    return {
      eventId: action.actionId,
      type: action.action,
      knownType: specific !== undefined,
      tenant: action.event?.organizationId ?? null,
      occurredAt: action.actionCreatedAt,
    };
  },
};
