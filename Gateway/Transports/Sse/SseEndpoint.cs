using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Options;
using OrleansPush.Gateway.Connections;
using OrleansPush.Gateway.Hosting;
using OrleansPush.Gateway.Routing;
using OrleansPush.Gateway.Transports.Http;

namespace OrleansPush.Gateway.Transports.Sse;

/// <summary>
/// <c>GET /sse?topic=a&amp;topic=b</c>: a Server-Sent Events stream of the named topics (and, for a named user, the
/// personal channel and server-side subscriptions). Every event's id is the stream's position in all its topics; a
/// reconnect that sends it back as <c>Last-Event-ID</c> (or <c>?lastEventId=</c>, for EventSource polyfills) resumes
/// every topic with <c>since</c>: each missed message still in history is replayed once, in order, and a topic that
/// cannot be fully recovered says so with a <c>subscribed</c> event carrying <c>"recovered":false</c>.
/// <para>Nothing is sent until every subscribe is admitted, so a refused topic is a plain JSON error
/// (<c>{"error":code,"message":..}</c>, 400/403/503) rather than a broken stream. Then the stream starts, and each
/// topic's replay runs at the pace the client reads (nothing is replayed before the stream's writer runs); a topic's
/// <c>subscribed</c> event follows its replay.</para>
/// </summary>
internal sealed class SseEndpoint(
    ConnectionCommands commands,
    Identity identity,
    IOptions<GatewayOptions> gatewayOptions,
    IOptions<SseOptions> sseOptions,
    TimeProvider time,
    ILogger<SseEndpoint> logger)
{
    public const string Path = "/sse";
    private readonly GatewayOptions _gateway = gatewayOptions.Value;
    private readonly SseOptions _options = sseOptions.Value;

    public async Task HandleAsync(HttpContext context)
    {
        if (!identity.TryGetUser(context, out var userId, out var problem))
        {
            await Problems.WriteAsync(context, StatusCodes.Status400BadRequest, WireCodes.BadRequest, problem);
            return;
        }

        var topics = context.Request.Query["topic"].Where(t => t is not null).Select(t => t!).Distinct(StringComparer.Ordinal).ToList();
        if (topics.Count > _options.MaxTopics)
        {
            await Problems.WriteAsync(context, StatusCodes.Status400BadRequest, WireCodes.BadRequest, $"A stream may name at most {_options.MaxTopics} topics.");
            return;
        }

        if (topics.Count == 0 && userId is null)
        {
            await Problems.WriteAsync(context, StatusCodes.Status400BadRequest, WireCodes.BadRequest, "Name at least one topic: /sse?topic=news.");
            return;
        }

        var lastEventId = context.Request.Headers["Last-Event-ID"].ToString();
        if (string.IsNullOrEmpty(lastEventId))
        {
            lastEventId = context.Request.Query["lastEventId"].ToString();
        }

        if (!StreamPositions.TryParseList(lastEventId, _options.MaxTopics + 1, out var resume, out problem))
        {
            await Problems.WriteAsync(context, StatusCodes.Status400BadRequest, WireCodes.BadRequest, problem);
            return;
        }

        var connection = new SseConnection(context, userId, _gateway.Outbound);
        connection.Access = identity.AccessOf(context);
        try
        {
            await StreamAsync(context, connection, topics, resume);
        }
        finally
        {
            connection.RequestEnded();
        }
    }

    private async Task StreamAsync(HttpContext context, SseConnection connection, List<string> topics, Dictionary<string, Since> resume)
    {
        var aborted = context.RequestAborted;
        var joined = await SubscribeAllAsync(context, connection, topics, resume);
        if (joined is null)
        {
            commands.OnDisconnected(connection);
            connection.Complete();
            return;
        }

        context.Response.StatusCode = StatusCodes.Status200OK;
        context.Response.ContentType = "text/event-stream";
        context.Response.Headers.CacheControl = "no-cache";
        context.Response.Headers["X-Accel-Buffering"] = "no";
        context.Features.Get<IHttpResponseBodyFeature>()?.DisableBuffering();

        // Ids carry where the client was until each topic's own events move it on, so a drop in between loses nothing.
        foreach (var (topic, since) in resume)
        {
            if (joined.ContainsKey(topic))
            {
                connection.Seed(topic, since);
            }
        }

        foreach (var (topic, subscribing) in joined)
        {
            _ = AnnounceAsync(connection, topic, subscribing.Completed);
        }

        using var heartbeats = CancellationTokenSource.CreateLinkedTokenSource(aborted);
        var writer = connection.RunWriterAsync(aborted);
        var beating = HeartbeatAsync(connection, heartbeats.Token);
        try
        {
            await writer;
        }
        finally
        {
            await heartbeats.CancelAsync();
            await beating;
            commands.OnDisconnected(connection);
            connection.Complete();
            if (connection.CloseReason is { } reason)
            {
                GatewayLog.ConnectionClosed(logger, connection.Id, connection.Transport, connection.RemoteAddress, reason);
            }
        }
    }

    /// <summary>Subscribes the stream's topics, each from its resume position when the client sent one. Returns every
    /// topic joined once all are admitted (their replays may still run), or null when the request was answered with an
    /// error (or went away: then nothing is left subscribed, however late the user's grain answers).</summary>
    private async Task<Dictionary<string, Subscribing>?> SubscribeAllAsync(
        HttpContext context, SseConnection connection, List<string> topics, Dictionary<string, Since> resume)
    {
        var joined = new Dictionary<string, Subscribing>(StringComparer.Ordinal);
        try
        {
            foreach (var topic in topics)
            {
                joined[topic] = commands.BeginSubscribe(connection, topic, resume.GetValueOrDefault(topic), 0);
            }

            // The personal channel and server-side subscriptions resume too, unless the query named them (then they
            // are already being resumed above, and a second resume would replay twice).
            var own = await commands.OnConnectedAsync(connection, resume: t => topics.Contains(t, StringComparer.Ordinal) ? null : resume.GetValueOrDefault(t))
                .WaitAsync(context.RequestAborted);
            await Task.WhenAll(joined.Values.Select(s => s.AdmittedAsync())).WaitAsync(context.RequestAborted);
            foreach (var (topic, subscribing) in own)
            {
                joined.TryAdd(topic, subscribing);
            }

            return joined;
        }
        catch (PushRejectedException rejected)
        {
            await Problems.WriteAsync(context, Problems.StatusOf(rejected.Code), rejected.Code, rejected.Message);
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
        }
        catch (Exception ex)
        {
            GatewayLog.SseSubscribeFailed(logger, connection.Id, ex);
            await Problems.WriteAsync(context, StatusCodes.Status503ServiceUnavailable, WireCodes.Unavailable, "The stream could not be opened; try again.");
        }

        return null;
    }

    /// <summary>Queues a topic's <c>subscribed</c> event once its replay has been queued.</summary>
    private static async Task AnnounceAsync(SseConnection connection, string topic, Task<SubscribeResult> completed)
    {
        try
        {
            connection.Subscribed(topic, await completed);
        }
        catch (Exception ex) when (ex is OperationCanceledException or PushRejectedException)
        {
            // The stream is closing, or the topic was unsubscribed meanwhile: nothing to announce.
        }
    }

    private async Task HeartbeatAsync(SseConnection connection, CancellationToken cancellationToken)
    {
        using var timer = new PeriodicTimer(_options.HeartbeatInterval, time);
        try
        {
            while (await timer.WaitForNextTickAsync(cancellationToken) && connection.Ping())
            {
            }
        }
        catch (OperationCanceledException)
        {
        }
    }
}
