using System.Globalization;
using System.Text.Json;
using System.Threading.Channels;
using Microsoft.AspNetCore.Http.Connections;
using Microsoft.AspNetCore.SignalR.Client;
using Microsoft.Extensions.DependencyInjection;

namespace OrleansPush.Gateway.Tests;

/// <summary>The official SignalR .NET client on each SignalR transport, with each hub protocol.</summary>
[Collection(GatewayCollection.Name)]
public sealed class SignalRTransportTests(GatewayFixture fixture)
{
    private TestGateway Gateway => fixture.Gateway;

    public static TheoryData<HttpTransportType, string> TransportsAndProtocols => new()
    {
        { HttpTransportType.WebSockets, "json" },
        { HttpTransportType.WebSockets, "messagepack" },
        { HttpTransportType.ServerSentEvents, "json" },
        { HttpTransportType.LongPolling, "json" },
        { HttpTransportType.LongPolling, "messagepack" },
    };

    /// <summary>Server-Sent Events carry text only, and MessagePack is binary: SignalR itself refuses the pair (the
    /// client says so before anything is sent), so the five other pairs are what SignalR can offer.</summary>
    [Fact]
    public async Task MessagePackOverServerSentEventsIsRefusedBySignalRItself()
    {
        await using var hub = new HubConnectionBuilder()
            .WithUrl(new Uri(Gateway.BaseAddress, "/hubs/push"), HttpTransportType.ServerSentEvents)
            .AddMessagePackProtocol()
            .Build();
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        var refused = await Assert.ThrowsAnyAsync<Exception>(() => hub.StartAsync(cts.Token));
        Assert.Contains("does not support the 'Binary' transfer format", refused.ToString(), StringComparison.Ordinal);
    }

    [Theory]
    [MemberData(nameof(TransportsAndProtocols))]
    public async Task SubscriberOnEverySignalRTransportAndProtocolReceivesPublishesInOrderAndCanPublish(HttpTransportType transport, string protocol)
    {
        var topic = "chat:" + Guid.NewGuid().ToString("N");
        var builder = new HubConnectionBuilder().WithUrl(new Uri(Gateway.BaseAddress, "/hubs/push"), transport, o =>
        {
            // Negotiation can be skipped on WebSockets alone: the other transports need the connection id it hands out.
            o.SkipNegotiation = transport == HttpTransportType.WebSockets;
        });
        if (protocol == "messagepack")
        {
            builder.AddMessagePackProtocol();
        }

        await using var hub = builder.Build();
        var received = Channel.CreateUnbounded<(long Seq, string Data)>();
        if (protocol == "messagepack")
        {
            hub.On<Dictionary<object, object?>>("msg", m => received.Writer.TryWrite((
                Convert.ToInt64(m["seq"], CultureInfo.InvariantCulture),
                JsonSerializer.Serialize(((IDictionary<object, object?>)m["data"]!).ToDictionary(kv => kv.Key.ToString()!, kv => kv.Value)))));
        }
        else
        {
            hub.On<JsonElement>("msg", m => received.Writer.TryWrite((m.GetProperty("seq").GetInt64(), m.GetProperty("data").GetRawText())));
        }

        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        await hub.StartAsync(cts.Token);
        await hub.InvokeAsync<object>("Subscribe", topic, null, cts.Token);

        for (var i = 1; i <= 3; i++)
        {
            await Gateway.PublishAsync(topic, $"{{\"i\":{i}}}");
        }

        await hub.InvokeAsync<object>("Publish", topic, new Dictionary<string, object> { ["i"] = 4 }, cts.Token);

        var messages = new List<(long Seq, string Data)>();
        while (messages.Count < 4)
        {
            messages.Add(await received.Reader.ReadAsync(cts.Token));
        }

        Assert.Equal([1L, 2, 3, 4], messages.Select(m => m.Seq));
        Assert.Equal(["{\"i\":1}", "{\"i\":2}", "{\"i\":3}", "{\"i\":4}"], messages.Select(m => m.Data));

        using var quiet = new CancellationTokenSource(TimeSpan.FromMilliseconds(300));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await received.Reader.ReadAsync(quiet.Token));
    }
}
