using System.Collections.Concurrent;
using System.Net;
using System.Text.Json;
using Microsoft.AspNetCore.SignalR;
using StackExchange.Redis;

namespace OrleansPush.Bench;

/// <summary>
/// The <c>signalr-redis</c> comparator (and, without <c>--redis</c>, plain SignalR for the idle-memory figure): stock
/// ASP.NET Core SignalR, one group per topic, <c>POST /api/topics/{topic}</c> sends <c>msg</c> to the group. With
/// <c>--redis</c> the instances are joined by the StackExchange.Redis backplane. A topic's seq is counted by the
/// instance that receives its publishes (the benchmark sends each topic's publishes to one instance).
/// </summary>
internal static class SignalRServer
{
    public const string HubPath = "/hubs/push";
    private const string Epoch = "signalr";

    public static async Task<int> RunAsync(int port, string? redis)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, port));
        var signalR = builder.Services.AddSignalR(o => o.KeepAliveInterval = TimeSpan.FromSeconds(15));
        if (redis is not null)
        {
            signalR.AddStackExchangeRedis(redis, o => o.Configuration.ChannelPrefix = RedisChannel.Literal("bench"));
        }

        var app = builder.Build();
        var topics = new ConcurrentDictionary<string, TopicCounter>(StringComparer.Ordinal);
        app.UseWebSockets(new WebSocketOptions { KeepAliveInterval = TimeSpan.Zero });
        app.MapGet("/healthz", () => Results.Ok());
        app.MapHub<BenchHub>(HubPath);
        app.MapPost("/api/topics/{**topic}", async (string topic, HttpRequest request, IHubContext<BenchHub> hub) =>
        {
            using var doc = await JsonDocument.ParseAsync(request.Body);
            var counter = topics.GetOrAdd(topic, static _ => new TopicCounter());
            Task send;
            long seq;
            lock (counter)
            {
                // SendAsync hands the message to the backplane before its first await, so taking seq and starting the
                // send under one lock keeps the group's messages in seq order.
                seq = ++counter.Seq;
                send = hub.Clients.Group(topic).SendAsync("msg", new PushMessage(topic, Epoch, seq, doc.RootElement));
            }

            await send;
            return Results.Ok(new { topic, epoch = Epoch, seq });
        });
        await app.RunAsync();
        return 0;
    }

    private sealed class TopicCounter
    {
        public long Seq;
    }

    public sealed record PushMessage(string Topic, string Epoch, long Seq, JsonElement Data);

    public sealed record SubscribeResult(string Epoch, long Seq);

    public sealed class BenchHub : Hub
    {
        public async Task<SubscribeResult> Subscribe(string topic, JsonElement? since)
        {
            _ = since;
            await Groups.AddToGroupAsync(Context.ConnectionId, topic);
            return new SubscribeResult(Epoch, 0);
        }
    }
}
