using System.Text.Json;
using Microsoft.Extensions.Options;
using OrleansPush.Gateway.Connections;
using OrleansPush.Gateway.Hosting;
using OrleansPush.Gateway.Routing;
using OrleansPush.Gateway.Transports.Http;

namespace OrleansPush.Gateway.Transports.LongPolling;

/// <summary>
/// <c>GET /poll?topic=a&amp;since=epoch:seq&amp;topic=b</c>: long polling. The n-th <c>since</c> belongs to the n-th
/// <c>topic</c> (an empty <c>since=</c> or a missing one means "from now"). Answers at once with what is newer than each
/// <c>since</c>; when there is nothing, waits up to <see cref="LongPollingOptions.Wait"/> for the next message.
/// <para>The answer, <c>{"messages":[{topic,epoch,seq,data}],"positions":{"a":{"epoch":..,"seq":..}},"recovered":..}</c>,
/// always carries every topic's position: polling again with those as <c>since</c> continues without loss or
/// duplicate. Per topic, messages are in seq order. A topic whose <c>since</c> could not be fully recovered (history
/// no longer reaches back, or a new epoch) has <c>"recovered":false</c> in its position, and the top-level
/// <c>recovered</c> is false; both are absent when no <c>since</c> was given.</para>
/// </summary>
internal sealed class LongPollingEndpoint(
    ConnectionCommands commands,
    Identity identity,
    IOptions<GatewayOptions> gatewayOptions,
    IOptions<LongPollingOptions> pollOptions,
    IHostApplicationLifetime lifetime,
    ILogger<LongPollingEndpoint> logger)
{
    public const string Path = "/poll";
    private readonly GatewayOptions _gateway = gatewayOptions.Value;
    private readonly LongPollingOptions _options = pollOptions.Value;

    public async Task HandleAsync(HttpContext context)
    {
        if (!identity.TryGetUser(context, out var userId, out var problem))
        {
            await Problems.WriteAsync(context, StatusCodes.Status400BadRequest, WireCodes.BadRequest, problem);
            return;
        }

        if (!TryReadRequest(context.Request.Query, out var topics, out var sinces, out problem))
        {
            await Problems.WriteAsync(context, StatusCodes.Status400BadRequest, WireCodes.BadRequest, problem);
            return;
        }

        var poll = new PollConnection(userId, context.Connection.RemoteIpAddress?.ToString(), _options.MaxMessages, _gateway.OutboundQueueBytes);
        poll.Access = identity.AccessOf(context);
        using var waiting = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, lifetime.ApplicationStopping);
        try
        {
            await commands.OnConnectedAsync(poll, Registration.Local);
            var subscribes = new Task<SubscribeResult>[topics.Length];
            for (var i = 0; i < topics.Length; i++)
            {
                subscribes[i] = commands.SubscribeAsync(poll, topics[i], sinces[i], 0);
            }

            var results = await Task.WhenAll(subscribes).WaitAsync(waiting.Token);
            if (!poll.Arrived.IsCompleted && _options.Wait > TimeSpan.Zero)
            {
                try
                {
                    await poll.Arrived.WaitAsync(_options.Wait, waiting.Token);
                }
                catch (TimeoutException)
                {
                }
                catch (OperationCanceledException) when (!context.RequestAborted.IsCancellationRequested)
                {
                    // The gateway is stopping: answer with what there is, so the client polls again elsewhere.
                }
            }

            // Stop collecting before answering: what arrives from here on is read again by the next poll's since.
            var collected = poll.Seal();
            if (poll.CloseReason is { } reason)
            {
                await Problems.WriteAsync(context, StatusCodes.Status503ServiceUnavailable, reason, "A message could not be answered on this poll; poll again.");
                return;
            }

            await WriteAnswerAsync(context, topics, sinces, results, collected);
        }
        catch (PushRejectedException rejected)
        {
            await Problems.WriteAsync(context, Problems.StatusOf(rejected.Code), rejected.Code, rejected.Message);
        }
        catch (OperationCanceledException) when (waiting.IsCancellationRequested)
        {
            if (!context.RequestAborted.IsCancellationRequested && !context.Response.HasStarted)
            {
                await Problems.WriteAsync(context, StatusCodes.Status503ServiceUnavailable, WireCodes.Unavailable, "The gateway is stopping; poll again.");
            }
        }
        catch (Exception ex) when (!context.Response.HasStarted)
        {
            GatewayLog.PollFailed(logger, poll.Id, ex);
            await Problems.WriteAsync(context, StatusCodes.Status503ServiceUnavailable, WireCodes.Unavailable, "The poll failed; try again.");
        }
        finally
        {
            commands.OnDisconnected(poll);
        }
    }

    private bool TryReadRequest(IQueryCollection query, out string[] topics, out Since?[] sinces, out string problem)
    {
        topics = [.. query["topic"].Select(t => t ?? string.Empty)];
        var sinceTexts = query["since"];
        sinces = new Since?[topics.Length];
        problem = string.Empty;
        if (topics.Length == 0)
        {
            problem = "Name at least one topic: /poll?topic=news&since=epoch:seq.";
            return false;
        }

        if (topics.Length > _options.MaxTopics)
        {
            problem = $"A poll may name at most {_options.MaxTopics} topics.";
            return false;
        }

        if (topics.Distinct(StringComparer.Ordinal).Count() != topics.Length)
        {
            problem = "A topic is named twice.";
            return false;
        }

        if (sinceTexts.Count > topics.Length)
        {
            problem = "More since than topic parameters: the n-th since belongs to the n-th topic.";
            return false;
        }

        for (var i = 0; i < sinceTexts.Count; i++)
        {
            var text = sinceTexts[i];
            if (string.IsNullOrEmpty(text))
            {
                continue;
            }

            if (!StreamPositions.TryParseSince(text, out var since))
            {
                problem = "A since is epoch:seq, as the previous answer's positions give it.";
                return false;
            }

            sinces[i] = since;
        }

        return true;
    }

    private static async Task WriteAnswerAsync(HttpContext context, string[] topics, Since?[] sinces, SubscribeResult[] results, PollConnection.Collected collected)
    {
        var last = new Dictionary<string, TopicMessage>(StringComparer.Ordinal);
        foreach (var m in collected.Messages)
        {
            last[m.Topic] = m;
        }

        context.Response.StatusCode = StatusCodes.Status200OK;
        context.Response.ContentType = "application/json; charset=utf-8";
        context.Response.Headers.CacheControl = "no-store";
        await using (var w = new Utf8JsonWriter(context.Response.BodyWriter, new JsonWriterOptions { SkipValidation = true }))
        {
            w.WriteStartObject();
            w.WriteStartArray("messages"u8);
            foreach (var m in collected.Messages)
            {
                MessageJson.Write(w, m, withOp: false);
            }

            w.WriteEndArray();
            w.WriteStartObject("positions"u8);
            bool? allRecovered = null;
            for (var i = 0; i < topics.Length; i++)
            {
                // Where this poll leaves the topic: its last message here; else just before the first one that did
                // not fit; else the position the subscribe reported.
                var (epoch, seq) = last.TryGetValue(topics[i], out var m) ? (m.Epoch, m.Seq)
                    : collected.FirstDropped.TryGetValue(topics[i], out var dropped) ? (dropped.Epoch, dropped.Seq - 1)
                    : (results[i].Epoch, results[i].Seq);
                w.WriteStartObject(topics[i]);
                w.WriteString("epoch"u8, epoch);
                w.WriteNumber("seq"u8, seq);
                if (sinces[i] is not null && results[i].Recovered is { } recovered)
                {
                    w.WriteBoolean("recovered"u8, recovered);
                    allRecovered = (allRecovered ?? true) && recovered;
                }

                w.WriteEndObject();
            }

            w.WriteEndObject();
            if (allRecovered is { } all)
            {
                w.WriteBoolean("recovered"u8, all);
            }

            w.WriteEndObject();
        }

        await context.Response.BodyWriter.FlushAsync(context.RequestAborted);
    }
}
