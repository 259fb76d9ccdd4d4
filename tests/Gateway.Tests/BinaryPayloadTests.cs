using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using System.Threading.Channels;
using Microsoft.AspNetCore.SignalR.Client;
using Microsoft.Extensions.DependencyInjection;
using MQTTnet.Protocol;
using OrleansPush.Client;

namespace OrleansPush.Gateway.Tests;

/// <summary>An embedded gateway with MQTT on a free loopback port, where clients may publish to default-namespace topics
/// (as MQTT devices do), a <c>doc</c> namespace with deltas and a <c>state</c> namespace that keeps the latest value.</summary>
public sealed class BinaryPayloadFixture : IAsyncLifetime
{
    public TestGateway Gateway { get; private set; } = null!;

    public int MqttPort { get; private set; }

    public async Task InitializeAsync()
    {
        MqttPort = Ports.Free();
        Gateway = await TestGateway.StartEmbeddedAsync(new Dictionary<string, string?>
        {
            ["OrleansPush:Mqtt:Port"] = MqttPort.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["OrleansPush:Mqtt:BindAddress"] = "127.0.0.1",
            ["OrleansPush:Topics:Default:ClientPublish"] = "true",
            ["OrleansPush:Topics:Namespaces:doc:Delta"] = "true",
            ["OrleansPush:Topics:Namespaces:state:KeepLatest"] = "true",
        });
    }

    public async Task DisposeAsync() => await Gateway.DisposeAsync();
}

[CollectionDefinition(Name)]
public sealed class BinaryPayloadCollection : ICollectionFixture<BinaryPayloadFixture>
{
    public const string Name = "binary payload gateway";
}

/// <summary>A message is JSON (the default) or binary (any bytes), end to end (DESIGN.md "Payloads").</summary>
[Collection(BinaryPayloadCollection.Name)]
public sealed class BinaryPayloadTests(BinaryPayloadFixture fixture)
{
    private TestGateway Gateway => fixture.Gateway;

    /// <summary>Not UTF-8, with zero bytes.</summary>
    private static readonly byte[] Garbled = [0x00, 0xff, 0xfe, 0x80, 0x41, 0x00, 0xc3, 0x28, 0x00];

    /// <summary>JSON text, published as binary: it stays binary.</summary>
    private static readonly byte[] JsonLooking = Encoding.UTF8.GetBytes("[1,2]");

    private const string Json = "{ \"j\" : \"caf\\u00e9\" }";

    [Fact]
    public async Task MosquittoPubPlainTextOverMqtt311ReachesMqttAndRawSubscribersAsTheBytesPublished()
    {
        Assert.True(File.Exists("/usr/bin/mosquitto_pub"), "mosquitto_pub is not installed: apt-get install mosquitto-clients (./test.sh does).");
        var topic = "TopicA-" + Guid.NewGuid().ToString("N")[..8];
        await using var mqtt = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort);
        Assert.Equal(MQTTnet.MqttClientSubscribeResultCode.GrantedQoS1, await mqtt.SubscribeAsync(topic, MqttQualityOfServiceLevel.AtLeastOnce));
        await using var raw = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        Assert.Equal("ok", (await raw.SubscribeAsync(topic)).Op);

        var (exitCode, output) = await ChildProcess.RunAsync("mosquitto_pub",
            ["-h", "127.0.0.1", "-p", fixture.MqttPort.ToString(System.Globalization.CultureInfo.InvariantCulture), "-V", "mqttv311",
                "-q", "1", "-t", topic, "-m", "plain text", "-i", "pub-" + Guid.NewGuid().ToString("N")[..12]],
            null, TimeSpan.FromSeconds(30));
        Assert.True(exitCode == 0, $"mosquitto_pub exited {exitCode}: {output}");

        var received = await mqtt.NextMessageAsync();
        Assert.Equal(topic, received.Topic);
        Assert.Equal("plain text"u8.ToArray(), received.Bytes);
        var frame = await raw.NextAsync();
        Assert.Equal(1, frame.Seq);
        Assert.Equal("plain text"u8.ToArray(), Convert.FromBase64String(frame.Json.GetProperty("data_b64").GetString()!));
        Assert.False(frame.Json.TryGetProperty("data", out _));
        await mqtt.AssertQuietAsync(TimeSpan.FromMilliseconds(300));
    }

    [Fact]
    public async Task Mqtt5NonJsonPublishIsAcceptedAndItsBytesArriveWhileJsonStaysJson()
    {
        var topic = GatewayFixture.NewTopic("m5");
        await using var subscriber = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort);
        Assert.Equal(MQTTnet.MqttClientSubscribeResultCode.GrantedQoS1, await subscriber.SubscribeAsync(topic, MqttQualityOfServiceLevel.AtLeastOnce));
        await using var raw = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        Assert.Equal("ok", (await raw.SubscribeAsync(topic)).Op);
        await using var publisher = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort);

        Assert.Equal(MQTTnet.MqttClientPublishReasonCode.Success, await publisher.PublishBytesAsync(topic, Garbled, MqttQualityOfServiceLevel.AtLeastOnce));
        Assert.Equal(MQTTnet.MqttClientPublishReasonCode.Success, await publisher.PublishBytesAsync(topic, Encoding.UTF8.GetBytes(Json), MqttQualityOfServiceLevel.AtLeastOnce));

        Assert.Equal(Garbled, (await subscriber.NextMessageAsync()).Bytes);
        Assert.Equal(Encoding.UTF8.GetBytes(Json), (await subscriber.NextMessageAsync()).Bytes);
        var frames = await raw.MessagesAsync(2);
        Assert.Equal(Garbled, Convert.FromBase64String(frames[0].Json.GetProperty("data_b64").GetString()!));
        Assert.Equal(Json, frames[1].RawData);
        Assert.False(frames[1].Json.TryGetProperty("data_b64", out _));
    }

    [Fact]
    public async Task BinaryHttpPublishesReachEveryTransportAsTheSameBytesInOrderOnce()
    {
        var topic = GatewayFixture.NewTopic("bin");
        var random = new byte[3000];
        new Random(15).NextBytes(random);
        (byte[] Bytes, bool Binary)[] published = [(Garbled, true), (Encoding.UTF8.GetBytes(Json), false), (JsonLooking, true), (random, true)];

        await using var raw = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        var ok = await raw.SubscribeAsync(topic);
        await using var sse = await SseClient.ConnectAsync(Gateway.Http, "/sse?topic=" + topic);
        await sse.EventsAsync("subscribed", 1);
        var (jsonHub, jsonMessages) = await ConnectHubAsync<JsonElement>(messagePack: false);
        await using var jsonHubScope = jsonHub;
        await jsonHub.InvokeAsync<JsonElement>("Subscribe", topic, null);
        var (packHub, packMessages) = await ConnectHubAsync<Dictionary<object, object?>>(messagePack: true);
        await using var packHubScope = packHub;
        await packHub.InvokeAsync<object?>("Subscribe", topic, null);
        await using var mqtt = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort);
        await mqtt.SubscribeAsync(topic, MqttQualityOfServiceLevel.AtLeastOnce);
        var dotnet = Channel.CreateUnbounded<PushMessage>();
        await using var client = new PushClient(new PushClientOptions { Url = Gateway.WebSocketUri() });
        using (var start = new CancellationTokenSource(WsClient.DefaultWait))
        {
            await client.StartAsync(start.Token);
            await client.SubscribeAsync(topic, m => dotnet.Writer.TryWrite(m), start.Token);
        }

        foreach (var (bytes, binary) in published)
        {
            await PublishAsync("/api/topics/" + topic, bytes, binary ? "application/octet-stream" : "application/json");
        }

        var expected = published.Select((p, i) => (Seq: (long)i + 1, Hex: Convert.ToHexString(p.Bytes), p.Binary)).ToArray();

        Assert.Equal(expected, (await raw.MessagesAsync(4)).Select(f => (f.Seq, Convert.ToHexString(Payload(f.Json)), f.Json.TryGetProperty("data_b64", out _))));
        Assert.Equal(expected, (await sse.EventsAsync("message", 4)).Select(e => (e.Seq, Convert.ToHexString(Payload(e.Json)), e.Json.TryGetProperty("data_b64", out _))));
        var poll = await PollAsync($"topic={topic}&since={ok.Epoch}:0");
        Assert.Equal(expected, poll.GetProperty("messages").EnumerateArray().Select(m => (m.GetProperty("seq").GetInt64(), Convert.ToHexString(Payload(m)), m.TryGetProperty("data_b64", out _))));

        // SignalR JSON: base64 in data_b64 (the JSON payload as a value in data); MessagePack: the bytes themselves.
        var viaJson = await TakeAsync(jsonMessages, 4);
        Assert.Equal(expected.Select(e => e.Seq), viaJson.Select(m => m.GetProperty("seq").GetInt64()));
        Assert.Equal(expected.Where(e => e.Binary).Select(e => e.Hex), viaJson.Where(m => m.TryGetProperty("data_b64", out _)).Select(m => Convert.ToHexString(m.GetProperty("data_b64").GetBytesFromBase64())));
        Assert.Equal("café", viaJson[1].GetProperty("data").GetProperty("j").GetString());
        var viaPack = await TakeAsync(packMessages, 4);
        Assert.Equal(expected.Select(e => e.Seq), viaPack.Select(m => Convert.ToInt64(m["seq"], System.Globalization.CultureInfo.InvariantCulture)));
        Assert.Equal(expected.Where(e => e.Binary).Select(e => e.Hex), viaPack.Where(m => m.ContainsKey("data_b64")).Select(m => Convert.ToHexString(Assert.IsType<byte[]>(m["data_b64"]))));
        Assert.False(viaPack[1].ContainsKey("data_b64"));

        var viaMqtt = new List<string>();
        for (var i = 0; i < 4; i++)
        {
            viaMqtt.Add(Convert.ToHexString((await mqtt.NextMessageAsync()).Bytes!));
        }

        Assert.Equal(expected.Select(e => e.Hex), viaMqtt);

        var viaClient = await TakeAsync(dotnet, 4);
        Assert.Equal(expected, viaClient.Select(m => (m.Seq, Convert.ToHexString(m.RawData.Span), m.IsBinary)));
        Assert.Equal("café", viaClient[1].Data.GetProperty("j").GetString());
        Assert.Throws<InvalidOperationException>(() => viaClient[0].Data);

        // Exactly once: nothing follows on any transport.
        Assert.True(await raw.IsQuietAsync(TimeSpan.FromMilliseconds(300)));
        Assert.True(await sse.IsQuietAsync(TimeSpan.FromMilliseconds(100)));
        await mqtt.AssertQuietAsync(TimeSpan.FromMilliseconds(100));
        Assert.False(jsonMessages.Reader.TryRead(out _));
        Assert.False(packMessages.Reader.TryRead(out _));
        Assert.False(dotnet.Reader.TryRead(out _));
    }

    [Fact]
    public async Task SignalRMessagePackClientPublishesBytesAsBinary()
    {
        var topic = GatewayFixture.NewTopic("srbin");
        await using var raw = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        await raw.SubscribeAsync(topic);
        var (hub, _) = await ConnectHubAsync<Dictionary<object, object?>>(messagePack: true);
        await using var hubScope = hub;
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        await hub.InvokeAsync<object?>("Publish", topic, Garbled, cts.Token);
        await hub.InvokeAsync<object?>("Publish", topic, new Dictionary<string, int> { ["n"] = 2 }, cts.Token);

        var frames = await raw.MessagesAsync(2);
        Assert.Equal(Convert.ToHexString(Garbled), Convert.ToHexString(Convert.FromBase64String(frames[0].Json.GetProperty("data_b64").GetString()!)));
        Assert.Equal("{\"n\":2}", frames[1].RawData);
    }

    [Fact]
    public async Task ResumeReplaysBinaryMessagesFromHistoryAsTheSameBytes()
    {
        var topic = GatewayFixture.NewTopic("binres");
        var first = await PublishAsync("/api/topics/" + topic, Garbled, "application/octet-stream");
        await PublishAsync("/api/topics/" + topic, Encoding.UTF8.GetBytes(Json), null);
        await PublishAsync("/api/topics/" + topic, JsonLooking, "Application/Octet-Stream; charset=binary");

        await using var raw = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        var ok = await raw.SubscribeAsync(topic, since: new { epoch = first.Epoch, seq = 0 });
        var replayed = await raw.MessagesAsync(3);
        Assert.True(ok.Recovered);
        Assert.Equal([(1L, Convert.ToHexString(Garbled), true), (2L, Convert.ToHexString(Encoding.UTF8.GetBytes(Json)), false), (3L, Convert.ToHexString(JsonLooking), true)],
            replayed.Select(f => (f.Seq, Convert.ToHexString(Payload(f.Json)), f.Json.TryGetProperty("data_b64", out _))));

        // The last message as initial state (last:1) too.
        await using var late = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        await late.SubscribeAsync(topic, last: 1);
        Assert.Equal(JsonLooking, Payload((await late.NextAsync()).Json));
    }

    [Fact]
    public async Task ContentTypesOtherThanOctetStreamMustStillBeOneJsonValue()
    {
        var topic = GatewayFixture.NewTopic("ct");
        await using var raw = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        await raw.SubscribeAsync(topic);

        // As curl -d sends it (form-urlencoded), as text, and without a type: JSON, carried as data.
        await PublishAsync("/api/topics/" + topic, "{\"a\":1}"u8.ToArray(), "application/x-www-form-urlencoded");
        await PublishAsync("/api/topics/" + topic, "[2]"u8.ToArray(), "text/plain");
        await PublishAsync("/api/topics/" + topic, "3"u8.ToArray(), null);
        Assert.Equal(["{\"a\":1}", "[2]", "3"], (await raw.MessagesAsync(3)).Select(f => f.RawData));

        using var refused = await PostAsync("/api/topics/" + topic, "plain text"u8.ToArray(), "text/plain");
        Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);
        Assert.True(await raw.IsQuietAsync(TimeSpan.FromMilliseconds(300)));
    }

    [Fact]
    public async Task SizeLimitCountsTheBytesOfABinaryPublish()
    {
        var topic = GatewayFixture.NewTopic("size");
        var max = Gateway.Services.GetRequiredService<Microsoft.Extensions.Options.IOptions<Hosting.GatewayOptions>>().Value.MaxMessageBytes;
        await PublishAsync("/api/topics/" + topic, new byte[max], "application/octet-stream");
        using var over = await PostAsync("/api/topics/" + topic, new byte[max + 1], "application/octet-stream");
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, over.StatusCode);
        Assert.Equal("too_large", (await over.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error").GetString());
    }

    [Fact]
    public async Task BatchItemsWithDataB64AndKeyedRetriesOfBinaryPublishesAreDeliveredOnce()
    {
        var topic = GatewayFixture.NewTopic("binbatch");
        var user = "bin-" + Guid.NewGuid().ToString("N")[..8];
        await using var raw = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        await raw.SubscribeAsync(topic);
        await using var own = await WsClient.ConnectAsync(Gateway.WebSocketUri("user=" + user));
        await own.SubscribeAsync("user:" + user);

        // An item that has neither or both of data and data_b64, or base64 that is not, makes the batch a bad request.
        foreach (var bad in new object[] { new { topic, data_b64 = "not base64!" }, new { topic, data = 1, data_b64 = "AA==" }, new { topic } })
        {
            using var refused = await PostAsync("/api/publish", JsonSerializer.SerializeToUtf8Bytes(new[] { bad }), "application/json");
            Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);
        }

        var batch = JsonSerializer.Serialize(new object[]
        {
            new { topic, data_b64 = Convert.ToBase64String(Garbled), key = "k1" },
            new { topic, data = new { j = 2 } },
        });
        using var content = new StringContent(batch, Encoding.UTF8, "application/json");
        using var answer = await Gateway.Http.PostAsync("/api/publish", content);
        var items = (await answer.Content.ReadFromJsonAsync<JsonElement>()).EnumerateArray().ToArray();
        Assert.Equal([1L, 2L], items.Select(i => i.GetProperty("seq").GetInt64()));

        // The same key again (in a batch, and over the topic API as octet-stream): the first position, no new message.
        using var retry = new StringContent(JsonSerializer.Serialize(new[] { new { topic, data_b64 = Convert.ToBase64String(Garbled), key = "k1" } }), Encoding.UTF8, "application/json");
        using var retried = await Gateway.Http.PostAsync("/api/publish", retry);
        Assert.Equal(1, (await retried.Content.ReadFromJsonAsync<JsonElement>())[0].GetProperty("seq").GetInt64());
        var keyed = await PublishAsync("/api/topics/" + topic, JsonLooking, "application/octet-stream", key: "k2");
        Assert.Equal(keyed.Seq, (await PublishAsync("/api/topics/" + topic, JsonLooking, "application/octet-stream", key: "k2")).Seq);

        // A user's personal channel takes binary too.
        await PublishAsync("/api/users/" + user, Garbled, "application/octet-stream");

        Assert.Equal([(1L, Convert.ToHexString(Garbled)), (2L, Convert.ToHexString("{\"j\":2}"u8)), (3L, Convert.ToHexString(JsonLooking))],
            (await raw.MessagesAsync(3)).Select(f => (f.Seq, Convert.ToHexString(Payload(f.Json)))));
        Assert.True(await raw.IsQuietAsync(TimeSpan.FromMilliseconds(300)));
        Assert.Equal(Garbled, Payload((await own.NextAsync()).Json));
    }

    [Fact]
    public async Task DeltaSubscriberGetsABinaryMessageWholeAndTheJsonAfterItWhole()
    {
        var topic = "doc:" + Guid.NewGuid().ToString("N");
        await using var raw = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        Assert.Equal("fossil", (await raw.RequestAsync("sub", new { topic, delta = "fossil" })).Json.GetProperty("delta").GetString());
        var document = "{\"body\":\"" + new string('x', 400) + "\",\"n\":1}";
        await Gateway.PublishAsync(topic, document);
        await PublishAsync("/api/topics/" + topic, Garbled, "application/octet-stream");
        await Gateway.PublishAsync(topic, document.Replace("\"n\":1", "\"n\":2", StringComparison.Ordinal));
        await Gateway.PublishAsync(topic, document.Replace("\"n\":1", "\"n\":3", StringComparison.Ordinal));

        var frames = await raw.MessagesAsync(4);
        Assert.Equal(document, frames[0].Json.GetProperty("text").GetString());
        Assert.Equal(Garbled, Payload(frames[1].Json));
        Assert.Equal(document.Replace("\"n\":1", "\"n\":2", StringComparison.Ordinal), frames[2].Json.GetProperty("text").GetString());
        Assert.True(frames[3].Json.TryGetProperty("delta", out _), "the message after a JSON one is a delta again: " + frames[3].Raw);
    }

    [Fact]
    public async Task LatestValueOfAKeepLatestTopicCanBeBinary()
    {
        var topic = "state:" + Guid.NewGuid().ToString("N");
        await Gateway.PublishAsync(topic, "{\"v\":1}");
        await PublishAsync("/api/topics/" + topic, Garbled, "application/octet-stream");
        await using var raw = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        await raw.SubscribeAsync(topic);
        var latest = await raw.NextAsync();
        Assert.Equal(2L, latest.Seq);
        Assert.Equal(Garbled, Payload(latest.Json));
        await using var mqtt = await MqttTestClient.ConnectTcpAsync(fixture.MqttPort);
        await mqtt.SubscribeAsync(topic, MqttQualityOfServiceLevel.AtLeastOnce);
        var retained = await mqtt.NextMessageAsync();
        Assert.Equal(Garbled, retained.Bytes);
        Assert.True(retained.Retain);
    }

    /// <summary>The bytes a JSON wire form's message carries: <c>data_b64</c> decoded, or the raw text of <c>data</c>.</summary>
    private static byte[] Payload(JsonElement message) => message.TryGetProperty("data_b64", out var b64)
        ? Convert.FromBase64String(b64.GetString()!)
        : Encoding.UTF8.GetBytes(message.GetProperty("data").GetRawText());

    private async Task<HttpResponseMessage> PostAsync(string path, byte[] body, string? contentType, string? key = null)
    {
        var content = new ByteArrayContent(body);
        content.Headers.ContentType = contentType is null ? null : MediaTypeHeaderValue.Parse(contentType);
        using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = content };
        if (key is not null)
        {
            request.Headers.Add("Idempotency-Key", key);
        }

        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        return await Gateway.Http.SendAsync(request, cts.Token);
    }

    private async Task<PublishAnswer> PublishAsync(string path, byte[] body, string? contentType, string? key = null)
    {
        using var response = await PostAsync(path, body, contentType, key);
        Assert.True(response.IsSuccessStatusCode, $"publish answered {(int)response.StatusCode}: {await response.Content.ReadAsStringAsync()}");
        return (await response.Content.ReadFromJsonAsync<PublishAnswer>())!;
    }

    private async Task<JsonElement> PollAsync(string query)
    {
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        using var response = await Gateway.Http.GetAsync("/poll?" + query, cts.Token);
        Assert.True(response.IsSuccessStatusCode, $"poll answered {(int)response.StatusCode}");
        return await response.Content.ReadFromJsonAsync<JsonElement>(cts.Token);
    }

    private async Task<(HubConnection Hub, Channel<T> Messages)> ConnectHubAsync<T>(bool messagePack)
    {
        var builder = new HubConnectionBuilder().WithUrl(new Uri(Gateway.BaseAddress, "/hubs/push"));
        if (messagePack)
        {
            builder.AddMessagePackProtocol();
        }

        var hub = builder.Build();
        var messages = Channel.CreateUnbounded<T>();
        hub.On<T>("msg", m => messages.Writer.TryWrite(m));
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        await hub.StartAsync(cts.Token);
        return (hub, messages);
    }

    private static async Task<List<T>> TakeAsync<T>(Channel<T> channel, int count)
    {
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        var list = new List<T>();
        while (list.Count < count)
        {
            list.Add(await channel.Reader.ReadAsync(cts.Token));
        }

        return list;
    }
}
