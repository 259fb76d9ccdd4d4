using System.Net;
using System.Net.WebSockets;
using System.Text;

namespace OrleansPush.Gateway.Tests;

[Collection(GatewayCollection.Name)]
public sealed class BadInputTests(GatewayFixture fixture)
{
    private TestGateway Gateway => fixture.Gateway;

    public static TheoryData<string> MalformedFrames => new()
    {
        "not json",
        "{\"op\":\"sub\",",
        "[1,2,3]",
        "\"just a string\"",
        "{}",
        "{\"id\":1}",
        "{\"op\":\"dance\",\"id\":2}",
        "{\"op\":\"sub\",\"id\":\"three\",\"topic\":\"a\"}",
        "{\"op\":\"sub\",\"id\":4,\"topic\":\"a\",\"since\":{\"epoch\":\"e\"}}",
        "{\"op\":\"sub\",\"id\":5,\"topic\":\"a\",\"since\":7}",
        "{\"op\":\"sub\",\"id\":6,\"topic\":\"a\",\"last\":-1}",
        "{\"op\":\"pub\",\"id\":7,\"topic\":\"chat:x\"}",
        "{\"op\":\"ping\",\"id\":8} trailing",
        "{\"op\":\"ping\",\"id\":1e400}",
        new string('[', 200) + new string(']', 200),
    };

    [Theory]
    [MemberData(nameof(MalformedFrames))]
    public async Task MalformedFrameGetsBadRequestAndTheConnectionStaysUsable(string frame)
    {
        await using var client = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        await client.SendAsync(frame);
        var error = await client.NextAsync();
        Assert.Equal("error", error.Op);
        Assert.Equal("bad_request", error.Code);
        Assert.False(string.IsNullOrWhiteSpace(error.Json.GetProperty("message").GetString()));

        var topic = GatewayFixture.NewTopic();
        Assert.Equal("ok", (await client.SubscribeAsync(topic)).Op);
        await Gateway.PublishAsync(topic, "{\"still\":\"works\"}");
        Assert.Equal("{\"still\":\"works\"}", (await client.MessagesAsync(1))[0].RawData);
    }

    [Fact]
    public async Task BinaryFrameGetsBadRequest()
    {
        await using var client = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        await client.SendAsync([1, 2, 3], WebSocketMessageType.Binary);
        Assert.Equal("bad_request", (await client.NextAsync()).Code);
        Assert.Equal("ok", (await client.RequestAsync("ping")).Op);
    }

    [Theory]
    [InlineData("has space")]
    [InlineData("semi;colon")]
    [InlineData("")]
    public async Task BadTopicNameGetsBadTopic(string topic)
    {
        await using var client = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        var error = await client.SubscribeAsync(topic);
        Assert.Equal("bad_topic", error.Code);
        Assert.Equal("ok", (await client.RequestAsync("ping")).Op);
    }

    [Fact]
    public async Task TooLongTopicNameGetsBadTopic()
    {
        await using var client = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        Assert.Equal("bad_topic", (await client.SubscribeAsync(new string('x', 201))).Code);
    }

    [Fact]
    public async Task OversizedFrameGetsTooLargeAndIsClosedWith1009()
    {
        await using var client = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        var big = "{\"op\":\"pub\",\"id\":1,\"topic\":\"chat:x\",\"data\":\"" + new string('x', 70_000) + "\"}";
        await client.SendAsync(Encoding.UTF8.GetBytes(big), WebSocketMessageType.Text);
        var frames = await client.ReadToEndAsync(WsClient.DefaultWait);
        Assert.Contains(frames, f => f.Code == "too_large");
        Assert.Equal(WebSocketCloseStatus.MessageTooBig, client.CloseStatus);
    }

    [Fact]
    public async Task HttpPublishErrorsAreClearJsonWithoutStackTraces()
    {
        using var badTopic = await Gateway.Http.PostAsync("/api/topics/bad%20topic", new StringContent("{}"));
        Assert.Equal(HttpStatusCode.BadRequest, badTopic.StatusCode);
        Assert.Contains("\"bad_topic\"", await badTopic.Content.ReadAsStringAsync());

        using var notJson = await Gateway.Http.PostAsync("/api/topics/news", new StringContent("{not json"));
        Assert.Equal(HttpStatusCode.BadRequest, notJson.StatusCode);
        Assert.Contains("\"bad_request\"", await notJson.Content.ReadAsStringAsync());

        using var tooLarge = await Gateway.Http.PostAsync("/api/topics/news", new StringContent("\"" + new string('x', 70_000) + "\""));
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, tooLarge.StatusCode);
        var body = await tooLarge.Content.ReadAsStringAsync();
        Assert.Contains("\"too_large\"", body);
        Assert.DoesNotContain("   at ", body);

        using var badUser = await Gateway.Http.PostAsync("/api/users/a:b", new StringContent("{}"));
        Assert.Equal(HttpStatusCode.BadRequest, badUser.StatusCode);
    }

    [Fact]
    public async Task BatchPublishAnswersEachItemInOrder()
    {
        var a = GatewayFixture.NewTopic();
        var b = GatewayFixture.NewTopic();
        var json = $"[{{\"topic\":\"{a}\",\"data\":{{\"n\":1}}}},{{\"topic\":\"{b}\",\"data\":[1]}},{{\"topic\":\"bad topic\",\"data\":1}},{{\"topic\":\"{a}\",\"data\":{{\"n\":2}},\"key\":\"k1\"}},{{\"topic\":\"{a}\",\"data\":{{\"n\":2}},\"key\":\"k1\"}}]";
        using var response = await Gateway.Http.PostAsync("/api/publish", new StringContent(json));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var answers = System.Text.Json.JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
        Assert.Equal(5, answers.GetArrayLength());
        Assert.Equal(1, answers[0].GetProperty("seq").GetInt64());
        Assert.Equal(1, answers[1].GetProperty("seq").GetInt64());
        Assert.Equal("bad_topic", answers[2].GetProperty("error").GetProperty("error").GetString());
        Assert.Equal(2, answers[3].GetProperty("seq").GetInt64());
        Assert.Equal(2, answers[4].GetProperty("seq").GetInt64()); // same key: the first publish's position
    }
}
