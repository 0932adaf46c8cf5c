/**
 * Seismic: https request URLs with an HMAC-SHA256 (hex) of the raw body in
 * `x-seismic-signature`, plus `x-seismic-signature-old` while a secret rotation is in
 * progress. Two envelopes exist: the v2 camelCase one and the legacy (Webhooks v1)
 * PascalCase one. Quirks seen in Seismic's own examples, all accepted:
 * - dates that are not ISO 8601: "07/14/2024 14:03:45", "0001-01-01T00:00:00" (kept as sent);
 * - emails obfuscated to "[email protected]" (emails are plain strings here);
 * - nulls for most fields, empty strings for URLs and IP addresses.
 */
import { array, boolean, literal, number, string, type, unknown, type Infer } from "superstruct";
import { maybe, nonEmpty } from "./compile";
import { check, isRecord, schemaMismatch, type ParsedEvent, type Provider } from "./provider";

/** Dates are kept exactly as Seismic sends them; see the quirks above. */
const ProviderDate = string();
const AnyObject = type({});

export const SeismicEnvelope = type({
  id: nonEmpty(string()),
  version: nonEmpty(string()),
  occurredAt: ProviderDate,
  tenantId: string(),
  tenantName: maybe(string()),
  application: maybe(string()),
  productArea: maybe(string()),
  type: maybe(string()),
  data: AnyObject,
});

export const SeismicLegacyEnvelope = type({
  Id: nonEmpty(string()),
  Version: nonEmpty(string()),
  OccurredAt: ProviderDate,
  TenantId: string(),
  TenantName: maybe(string()),
  Application: maybe(string()),
  Data: AnyObject,
});

const LibraryContent = type({
  Id: maybe(string()),
  TeamsiteId: maybe(string()),
  VersionId: maybe(string()),
});

const Content = type({
  Id: maybe(string()),
  Name: maybe(string()),
  Repository: maybe(string()),
  TotalPages: maybe(number()),
  Type: maybe(string()),
  LibraryContent: maybe(LibraryContent),
  ContentProfileId: maybe(string()),
  ContentProfilePath: maybe(array(string())),
});

const ClientDetails = type({
  Browser: maybe(string()),
  BrowserVersion: maybe(string()),
  City: maybe(string()),
  Country: maybe(string()),
  DeviceType: maybe(string()),
  IpAddress: maybe(string()),
  Locale: maybe(string()),
  OperatingSystem: maybe(string()),
  OperatingSystemVersion: maybe(string()),
  ProductArea: maybe(string()),
  Application: maybe(string()),
  SessionId: maybe(string()),
  GeolocationLatitude: maybe(number()),
  GeolocationLongitude: maybe(number()),
  State: maybe(string()),
  ApplicationType: maybe(string()),
});

const Link = type({
  AllowDownload: maybe(boolean()),
  DownloadFormatsSetting: maybe(array(string())),
  Content: maybe(array(Content)),
  IsLandingPageCustomized: maybe(boolean()),
  IsLivesendExperience: maybe(boolean()),
  CreatedAt: maybe(ProviderDate),
  CreatedBy: maybe(string()),
  ExpiresAt: maybe(ProviderDate),
  HasPassword: maybe(boolean()),
  Id: maybe(string()),
  IsLive: maybe(boolean()),
  IsSeparateSend: maybe(boolean()),
  ModifiedAt: maybe(ProviderDate),
  NormalizedId: maybe(string()),
  NotificationMode: maybe(string()),
  Tags: maybe(array(unknown())),
  UrlPath: maybe(string()),
});

const Page = type({
  DurationMilliseconds: maybe(number()),
  StartedAt: maybe(ProviderDate),
  EndedAt: maybe(ProviderDate),
  PageIndex: maybe(number()),
  ThumbnailImageUrl: maybe(string()),
});

const ContentSession = type({
  Pages: maybe(array(Page)),
  TotalPages: maybe(number()),
  TotalPagesViewed: maybe(number()),
  Id: maybe(string()),
  Content: maybe(Content),
  DownloadCount: maybe(number()),
  DurationSeconds: maybe(number()),
  SessionEndedAt: maybe(ProviderDate),
  SessionStartedAt: maybe(ProviderDate),
  SessionType: maybe(string()),
  WasDownloaded: maybe(boolean()),
  WasViewed: maybe(boolean()),
});

/** CRM context of a participant: filled in the enriched variants, empty otherwise. */
const ParticipantContext = type({
  ContextId: maybe(string()),
  ContextType: maybe(string()),
  SystemType: maybe(string()),
  SystemId: maybe(string()),
  ContextName: maybe(string()),
  ContextEmail: maybe(string()),
  Source: maybe(string()),
  SourceType: maybe(string()),
});

const Participant = type({
  Context: maybe(array(ParticipantContext)),
  InteractionId: maybe(string()),
  Email: maybe(string()),
  UserId: maybe(string()),
  UserType: maybe(string()),
  UserLoginType: maybe(string()),
});

/** `data` of livesend-session-summary(-enriched)-v3 and of the legacy interaction session summary. */
export const InteractionSessionSummary = type({
  InteractionId: nonEmpty(string()),
  DeliveryOptionName: maybe(string()),
  InteractionOccurredAt: maybe(ProviderDate),
  UserId: maybe(string()),
  ActionType: maybe(string()),
  ClientDetails: maybe(ClientDetails),
  Recipients: maybe(array(unknown())),
  Links: maybe(array(unknown())),
  Email: maybe(string()),
  Status: maybe(string()),
  LivesendSessionSummary: maybe(type({ Link: maybe(Link), TrackingParameters: maybe(AnyObject) })),
  ContentSessions: maybe(array(ContentSession)),
  DetailsUrl: maybe(string()),
  Participants: maybe(array(Participant)),
  SessionEndedAt: maybe(ProviderDate),
  SessionId: maybe(string()),
  SessionStartedAt: maybe(ProviderDate),
  TotalContent: maybe(number()),
  TotalContentDownloaded: maybe(number()),
  TotalContentViewed: maybe(number()),
  TotalDurationSeconds: maybe(number()),
  LandingPageDurationSeconds: maybe(number()),
});
export type InteractionSessionSummary = Infer<typeof InteractionSessionSummary>;

/** Event versions with a schema for their `data`. */
const dataSchemas = new Map([
  ["livesend-session-summary-v3", InteractionSessionSummary],
  ["livesend-session-summary-enriched-v3", InteractionSessionSummary],
  ["interaction_session_summary", InteractionSessionSummary],
  ["interaction_session_summary_enriched", InteractionSessionSummary],
]);

/** Every event Seismic documents (seismic-webhooks-overview.txt); others are accepted as unknown. */
const documentedTypes = new Set([
  ...dataSchemas.keys(),
  ...["ActiveVersionChanged", "ContentVersionExpired", "CopyFile", "CreateFile", "CopyFolder", "CreateFileVersion", "DeleteFile", "MoveFile", "UpdateContentCustomProperty"].map((e) => `ContentManager${e}V1`),
  "ContentProfileAddToProfileV1", "ContentProfileRemoveFromProfileV1",
  "CustomSchemaCreateV1", "CustomSchemaUpdateV1", "CustomSchemaDeleteV1",
  "email-enriched-v3", "email-v3", "email", "email_enriched",
  "LiveDocCompletedV2", "LDXJobStatusV1", "livesend-summary-v2",
  ...["PlannerProject", "PlannerRequest", "PlannerTask", "Program"].flatMap((e) => [`${e}UpdateV1`, `${e}DeleteV1`, `${e}CreateV1`]),
  "ReadinessArchivalEventV1",
  "UserDeletedV1", "UserCreatedV1", "UserUpdatedV1",
  "UserGroupDeletedV1", "UserGroupCreatedV1", "UserGroupUpdatedV1", "UserGroupMemberChangeV1",
  "WorkflowApproveStepV1", "WorkflowRecallV1", "WorkflowRejectStepV1", "WorkflowRevokeStepV1", "WorkflowSubmitV1",
]);

const UrlVerification = type({ type: literal("verification"), challenge: nonEmpty(string()) });
const ChallengeV1 = type({ version: literal("WebhookChallengeV1"), data: type({ challenge: nonEmpty(string()) }) });

/** Both envelopes, read into the v2 field names. */
function readEnvelope(body: unknown) {
  if (!isRecord(body)) throw schemaMismatch("$ must be a JSON object", "$");
  const legacy = !("id" in body) && !("version" in body) && ("Id" in body || "Version" in body);
  if (!legacy) return { ...check(body, SeismicEnvelope), dataPath: "$.data" };
  const { Id, Version, OccurredAt, TenantId, Data } = check(body, SeismicLegacyEnvelope);
  return { id: Id, version: Version, occurredAt: OccurredAt, tenantId: TenantId, data: Data, dataPath: "$.Data" };
}

export const seismic: Provider = {
  name: "seismic",

  bindings: { secret: "SEISMIC_SIGNING_SECRET", secretOld: "SEISMIC_SIGNING_SECRET_OLD" },

  signatures(headers) {
    const found: string[] = [];
    for (const name of ["x-seismic-signature", "x-seismic-signature-old"]) {
      const value = headers.get(name);
      if (value !== null) found.push(value.trim());
    }
    return found;
  },

  challenge(body) {
    if (!isRecord(body)) return null;
    // Seismic's URL verification: answer the challenge in plain text.
    if (body.type === "verification") {
      const { challenge } = check(body, UrlVerification);
      return new Response(challenge, { headers: { "content-type": "text/plain; charset=utf-8" } });
    }
    // The newer envelope form of the same handshake.
    if (body.version === "WebhookChallengeV1") {
      const { data } = check(body, ChallengeV1);
      return Response.json({ challenge: data.challenge });
    }
    return null;
  },

  parse(body): ParsedEvent {
    const envelope = readEnvelope(body);
    const dataSchema = dataSchemas.get(envelope.version);
    if (dataSchema) check(envelope.data, dataSchema, envelope.dataPath);
    return {
      eventId: envelope.id,
      type: envelope.version,
      knownType: documentedTypes.has(envelope.version),
      tenant: envelope.tenantId,
      occurredAt: envelope.occurredAt,
    };
  },
};
