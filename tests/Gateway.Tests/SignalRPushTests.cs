using System.Text.Json;
using System.Threading.Channels;
using Microsoft.AspNetCore.SignalR.Client;
using Microsoft.AspNetCore.SignalR;
using Microsoft.Extensions.DependencyInjection;

namespace OrleansPush.Gateway.Tests;

[Collection(GatewayCollection.Name)]
public sealed class SignalRPushTests(GatewayFixture fixture)
{
    private TestGateway Gateway => fixture.Gateway;

    public static TheoryData<string> Protocols => new() { "json", "messagepack" };

    private async Task<(HubConnection Hub, Channel<IDictionary<string, object?>> Messages)> ConnectAsync(string protocol, string? user = null)
    {
        var url = new Uri(Gateway.BaseAddress, "/hubs/push" + (user is null ? string.Empty : "?user=" + user));
        var builder = new HubConnectionBuilder().WithUrl(url);
        if (protocol == "messagepack")
        {
            builder.AddMessagePackProtocol();
        }

        var hub = builder.Build();
        var messages = Channel.CreateUnbounded<IDictionary<string, object?>>();
        if (protocol == "messagepack")
        {
            hub.On<Dictionary<object, object?>>("msg", m => messages.Writer.TryWrite(m.ToDictionary(kv => (string)kv.Key, kv => kv.Value)));
        }
        else
        {
            hub.On<JsonElement>("msg", m => messages.Writer.TryWrite(m.EnumerateObject().ToDictionary(p => p.Name, p => (object?)p.Value.Clone())));
        }

        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        await hub.StartAsync(cts.Token);
        return (hub, messages);
    }

    private static async Task<List<IDictionary<string, object?>>> TakeAsync(Channel<IDictionary<string, object?>> channel, int count)
    {
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        var list = new List<IDictionary<string, object?>>();
        while (list.Count < count)
        {
            list.Add(await channel.Reader.ReadAsync(cts.Token));
        }

        return list;
    }

    private static long Long(object? value) => value switch
    {
        JsonElement e => e.GetInt64(),
        _ => Convert.ToInt64(value, System.Globalization.CultureInfo.InvariantCulture),
    };

    /// <summary>Data as canonical JSON text, whichever protocol carried it.</summary>
    private static string DataJson(object? value) => value switch
    {
        JsonElement e => JsonSerializer.Serialize(e),
        IDictionary<object, object?> map => JsonSerializer.Serialize(map.ToDictionary(kv => kv.Key.ToString()!, kv => kv.Value)),
        _ => JsonSerializer.Serialize(value),
    };

    [Theory]
    [MemberData(nameof(Protocols))]
    public async Task SignalRSubscriberReceivesHttpPublishesInOrderOnce(string protocol)
    {
        var topic = GatewayFixture.NewTopic("sr");
        var (hub, messages) = await ConnectAsync(protocol);
        await using var _ = hub;
        var reply = await hub.InvokeAsync<JsonElement>("Subscribe", topic, null);
        var epochFromReply = protocol == "json" ? reply.GetProperty("epoch").GetString() : null;

        for (var i = 1; i <= 10; i++)
        {
            await Gateway.PublishAsync(topic, $"{{\"i\":{i},\"name\":\"n{i}\"}}");
        }

        var received = await TakeAsync(messages, 10);
        Assert.Equal(Enumerable.Range(1, 10).Select(i => (long)i), received.Select(m => Long(m["seq"])));
        Assert.Equal(Enumerable.Range(1, 10).Select(i => $"{{\"i\":{i},\"name\":\"n{i}\"}}"), received.Select(m => DataJson(m["data"])));
        Assert.All(received, m => Assert.Equal(topic, m["topic"] is JsonElement e ? e.GetString() : m["topic"]));
        if (epochFromReply is not null)
        {
            Assert.All(received, m => Assert.Equal(epochFromReply, ((JsonElement)m["epoch"]!).GetString()));
        }

        using var quiet = new CancellationTokenSource(TimeSpan.FromMilliseconds(400));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await messages.Reader.ReadAsync(quiet.Token));
    }

    [Theory]
    [MemberData(nameof(Protocols))]
    public async Task SignalRClientCanPublishWhereAllowedAndGetsCodedErrorsElsewhere(string protocol)
    {
        var topic = "chat:" + Guid.NewGuid().ToString("N");
        var (hub, messages) = await ConnectAsync(protocol);
        await using var _ = hub;
        await hub.InvokeAsync<object>("Subscribe", topic, null);
        await hub.InvokeAsync<object>("Publish", topic, new Dictionary<string, object> { ["text"] = "hello" });
        var message = (await TakeAsync(messages, 1))[0];
        Assert.Equal("{\"text\":\"hello\"}", DataJson(message["data"]));

        var forbidden = await Assert.ThrowsAsync<HubException>(() => hub.InvokeAsync<object>("Publish", GatewayFixture.NewTopic(), 1));
        // In-process, the SignalR client package and the server framework load two HubException types, so the
        // server wraps the message; against a real gateway process the message starts with the code.
        Assert.Contains("forbidden: ", forbidden.Message, StringComparison.Ordinal);
        var badTopic = await Assert.ThrowsAsync<HubException>(() => hub.InvokeAsync<object>("Subscribe", "bad topic", null));
        Assert.Contains("bad_topic: ", badTopic.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task SignalRResumeReplaysMissedMessages()
    {
        var topic = GatewayFixture.NewTopic("sr");
        var first = await Gateway.PublishAsync(topic, "{\"n\":1}");
        await Gateway.PublishAsync(topic, "{\"n\":2}");
        await Gateway.PublishAsync(topic, "{\"n\":3}");

        var (hub, messages) = await ConnectAsync("json");
        await using var _ = hub;
        var reply = await hub.InvokeAsync<JsonElement>("Subscribe", topic, new { epoch = first.Epoch, seq = 1 });
        Assert.True(reply.GetProperty("recovered").GetBoolean());
        Assert.Equal(3, reply.GetProperty("seq").GetInt64());
        Assert.Equal([2L, 3], (await TakeAsync(messages, 2)).Select(m => Long(m["seq"])));
    }
}
