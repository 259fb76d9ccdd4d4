using System.Buffers;
using System.IO.Pipelines;
using System.Text.Json;
using Microsoft.Extensions.Options;
using OrleansPush.Gateway.Hosting;
using OrleansPush.Gateway.Security;

namespace OrleansPush.Gateway.Publishing;

/// <summary>The backend API: publish to topics and users, batches, and server-side subscriptions.</summary>
internal static class PublishEndpoints
{
    public const string IdempotencyHeader = "Idempotency-Key";

    public static IEndpointRouteBuilder MapPublishApi(this IEndpointRouteBuilder app)
    {
        var api = app.MapGroup("/api").AddEndpointFilter<ApiAccess>();
        api.MapPost("/topics/{**topic}", PublishToTopic);
        api.MapGet("/topics/{**topic}", GetTopic);
        api.MapPost("/users/{userId}", PushToUser);
        api.MapPost("/publish", PublishBatch);
        api.MapPut("/users/{userId}/subscriptions/{**topic}", (string userId, string topic, IClusterClient cluster) => ChangeUserSubscription(userId, topic, true, cluster));
        api.MapDelete("/users/{userId}/subscriptions/{**topic}", (string userId, string topic, IClusterClient cluster) => ChangeUserSubscription(userId, topic, false, cluster));
        api.MapGet("/users/{userId}/subscriptions", GetUserSubscriptions);
        return app;
    }

    private static async Task<IResult> PublishToTopic(string topic, HttpRequest request, Publisher publisher, IOptions<GatewayOptions> options)
    {
        try
        {
            var body = await ReadBodyAsync(request, options.Value.MaxMessageBytes);
            var position = await publisher.PublishAsync(topic, body, Key(request), FormatOf(request));
            return Results.Ok(new PublishAnswer(topic, position.Epoch, position.Seq));
        }
        catch (PushRejectedException rejected)
        {
            return Problems.Result(rejected);
        }
    }

    private static async Task<IResult> PushToUser(string userId, HttpRequest request, Publisher publisher, IOptions<GatewayOptions> options)
    {
        try
        {
            var body = await ReadBodyAsync(request, options.Value.MaxMessageBytes);
            var position = await publisher.PushToUserAsync(userId, body, Key(request), FormatOf(request));
            return Results.Ok(new PublishAnswer(TopicName.Personal(userId), position.Epoch, position.Seq));
        }
        catch (PushRejectedException rejected)
        {
            return Problems.Result(rejected);
        }
    }

    /// <summary><c>[{"topic":..,"data":..,"key":..}, ...]</c>; an item with <c>"data_b64"</c> (base64) in place of
    /// <c>"data"</c> publishes those bytes as binary. Items of one topic are published in the order given;
    /// topics proceed in parallel. Each item gets its own answer, so one bad item does not sink the rest.</summary>
    private static async Task<IResult> PublishBatch(HttpRequest request, Publisher publisher, IOptions<GatewayOptions> options)
    {
        List<BatchItem> items;
        try
        {
            const int maxItems = 1000;
            var body = await ReadBodyAsync(request, options.Value.MaxMessageBytes * 16);
            items = ParseBatch(body, maxItems);
        }
        catch (PushRejectedException rejected)
        {
            return Problems.Result(rejected);
        }

        if (ApiAccess.CheckBatch(request.HttpContext, items.Select(i => i.Topic)) is { } forbidden)
        {
            return forbidden;
        }

        var answers = new object[items.Count];
        await Task.WhenAll(items.Select((item, index) => (item, index)).GroupBy(x => x.item.Topic).Select(async group =>
        {
            foreach (var (item, index) in group)
            {
                try
                {
                    var position = await publisher.PublishAsync(item.Topic, item.Data, item.Key, item.Format);
                    answers[index] = new PublishAnswer(item.Topic, position.Epoch, position.Seq);
                }
                catch (PushRejectedException rejected)
                {
                    answers[index] = new BatchError(item.Topic, new Problems.ErrorBody(rejected.Code, rejected.Message));
                }
            }
        }));
        return Results.Ok(answers);
    }

    private const string PresenceSuffix = "/presence";

    /// <summary><c>GET /api/topics/{topic}</c>: position and gateways; <c>GET /api/topics/{topic}/presence</c>: who is
    /// subscribed, where the namespace has presence.</summary>
    private static async Task<IResult> GetTopic(string topic, IClusterClient cluster, IOptions<TopicOptions> topics)
    {
        if (topic.EndsWith(PresenceSuffix, StringComparison.Ordinal) && TopicName.IsValid(topic[..^PresenceSuffix.Length]))
        {
            return await GetPresence(topic[..^PresenceSuffix.Length], cluster, topics.Value);
        }

        if (!TopicName.IsValid(topic))
        {
            return Problems.Result(new PushRejectedException(WireCodes.BadTopic, "A topic is 1-200 characters of A-Z a-z 0-9 _ - . : / @."));
        }

        try
        {
            var grain = cluster.GetGrain<ITopicGrain>(topic);
            var position = await grain.GetPositionAsync();
            var gateways = await grain.GetGatewaysAsync();
            return Results.Ok(new { topic, epoch = position.Epoch, seq = position.Seq, gateways });
        }
        catch (Exception ex) when (ex is not PushRejectedException)
        {
            return Problems.Result(new PushRejectedException(WireCodes.Unavailable, "The topic could not be reached; try again."));
        }
    }

    private static async Task<IResult> GetPresence(string topic, IClusterClient cluster, TopicOptions topics)
    {
        if (!topics.For(topic).Presence)
        {
            return Results.Json(new Problems.ErrorBody(WireCodes.BadRequest, "Presence is not enabled for this topic's namespace."), statusCode: StatusCodes.Status404NotFound);
        }

        try
        {
            var presence = await cluster.GetGrain<ITopicGrain>(topic).GetPresenceAsync();
            return Results.Ok(new
            {
                topic,
                users = presence.Users.Select(u => new { userId = u.UserId, connections = u.Connections }),
                anonymousConnections = presence.AnonymousConnections,
            });
        }
        catch (Exception ex) when (ex is not PushRejectedException)
        {
            return Problems.Result(new PushRejectedException(WireCodes.Unavailable, "The topic could not be reached; try again."));
        }
    }

    private static async Task<IResult> ChangeUserSubscription(string userId, string topic, bool subscribe, IClusterClient cluster)
    {
        if (!TopicName.IsValidUserId(userId))
        {
            return Problems.Result(new PushRejectedException(WireCodes.BadRequest, "A user id is 1-195 characters of A-Z a-z 0-9 _ - . / @ (no ':')."));
        }

        if (!TopicName.IsValid(topic))
        {
            return Problems.Result(new PushRejectedException(WireCodes.BadTopic, "A topic is 1-200 characters of A-Z a-z 0-9 _ - . : / @."));
        }

        try
        {
            var grain = cluster.GetGrain<IUserGrain>(userId);
            var changed = subscribe ? await grain.SubscribeAsync(topic) : await grain.UnsubscribeAsync(topic);
            return Results.Ok(new { userId, topic, subscribed = subscribe, changed });
        }
        catch (PushRejectedException rejected)
        {
            return Problems.Result(rejected);
        }
        catch (Exception)
        {
            return Problems.Result(new PushRejectedException(WireCodes.Unavailable, "The change was not made; it is safe to retry."));
        }
    }

    private static async Task<IResult> GetUserSubscriptions(string userId, IClusterClient cluster)
    {
        if (!TopicName.IsValidUserId(userId))
        {
            return Problems.Result(new PushRejectedException(WireCodes.BadRequest, "A user id is 1-195 characters of A-Z a-z 0-9 _ - . / @ (no ':')."));
        }

        try
        {
            return Results.Ok(new { userId, topics = await cluster.GetGrain<IUserGrain>(userId).GetSubscriptionsAsync() });
        }
        catch (Exception)
        {
            return Problems.Result(new PushRejectedException(WireCodes.Unavailable, "The user could not be reached; try again."));
        }
    }

    /// <summary>The body of a publish is binary with <c>Content-Type: application/octet-stream</c>; with any other type,
    /// or none, it must be one JSON value (so <c>curl -d '{...}'</c>, which says form-urlencoded, keeps working).</summary>
    private static PayloadFormat FormatOf(HttpRequest request) =>
        Microsoft.Net.Http.Headers.MediaTypeHeaderValue.TryParse(request.ContentType, out var type)
        && type.MediaType.Equals(OctetStream, StringComparison.OrdinalIgnoreCase) ? PayloadFormat.Binary : PayloadFormat.Json;

    private const string OctetStream = "application/octet-stream";

    private static string? Key(HttpRequest request) =>
        request.Headers.TryGetValue(IdempotencyHeader, out var key) && !string.IsNullOrEmpty(key) ? key.ToString() : null;

    /// <summary>Reads the body, refusing it as <c>too_large</c> as soon as it passes <paramref name="max"/> bytes.</summary>
    private static async Task<ReadOnlyMemory<byte>> ReadBodyAsync(HttpRequest request, int max)
    {
        if (request.ContentLength > max)
        {
            throw new PushRejectedException(WireCodes.TooLarge, $"A message is at most {max} bytes.");
        }

        var reader = request.BodyReader;
        while (true)
        {
            ReadResult read;
            try
            {
                read = await reader.ReadAsync(request.HttpContext.RequestAborted);
            }
            catch (Exception ex) when (ex is IOException or OperationCanceledException or BadHttpRequestException)
            {
                throw new PushRejectedException(WireCodes.BadRequest, "The request body could not be read.");
            }

            if (read.Buffer.Length > max)
            {
                reader.AdvanceTo(read.Buffer.Start, read.Buffer.End);
                throw new PushRejectedException(WireCodes.TooLarge, $"A message is at most {max} bytes.");
            }

            if (read.IsCompleted)
            {
                var body = read.Buffer.ToArray();
                reader.AdvanceTo(read.Buffer.End);
                return body;
            }

            reader.AdvanceTo(read.Buffer.Start, read.Buffer.End);
        }
    }

    private static List<BatchItem> ParseBatch(ReadOnlyMemory<byte> body, int maxItems)
    {
        try
        {
            using var doc = JsonDocument.Parse(body, new JsonDocumentOptions { MaxDepth = 64 });
            if (doc.RootElement.ValueKind != JsonValueKind.Array)
            {
                throw new PushRejectedException(WireCodes.BadRequest, "A batch is a JSON array of {\"topic\":..,\"data\":..}.");
            }

            if (doc.RootElement.GetArrayLength() > maxItems)
            {
                throw new PushRejectedException(WireCodes.TooLarge, $"A batch holds at most {maxItems} items.");
            }

            var items = new List<BatchItem>();
            foreach (var e in doc.RootElement.EnumerateArray())
            {
                if (e.ValueKind != JsonValueKind.Object
                    || !e.TryGetProperty("topic", out var topic) || topic.ValueKind != JsonValueKind.String
                    || Payload(e) is not var (bytes, format))
                {
                    throw new PushRejectedException(WireCodes.BadRequest, "Each batch item needs a string \"topic\" and either a \"data\" value or a base64 string \"data_b64\".");
                }

                string? key = e.TryGetProperty("key", out var k) && k.ValueKind == JsonValueKind.String ? k.GetString() : null;
                items.Add(new BatchItem(topic.GetString()!, bytes, format, key));
            }

            return items;
        }
        catch (JsonException)
        {
            throw new PushRejectedException(WireCodes.BadRequest, "The batch is not valid JSON.");
        }
    }

    /// <summary>An item's payload: <c>"data"</c> (JSON) or <c>"data_b64"</c> (binary), exactly one of them.</summary>
    private static (byte[] Bytes, PayloadFormat Format)? Payload(JsonElement item)
    {
        var hasJson = item.TryGetProperty("data"u8, out var data);
        var hasBinary = item.TryGetProperty("data_b64"u8, out var base64);
        if (hasJson == hasBinary)
        {
            return null;
        }

        if (hasJson)
        {
            return (System.Text.Encoding.UTF8.GetBytes(data.GetRawText()), PayloadFormat.Json);
        }

        return base64.ValueKind == JsonValueKind.String && base64.TryGetBytesFromBase64(out var bytes) ? (bytes, PayloadFormat.Binary) : null;
    }

    private sealed record BatchItem(string Topic, byte[] Data, PayloadFormat Format, string? Key);

    private sealed record PublishAnswer(string Topic, string Epoch, long Seq);

    private sealed record BatchError(string Topic, Problems.ErrorBody Error);
}
