using MQTTnet;
using MQTTnet.Formatter;
using MQTTnet.Protocol;

namespace OrleansPush.Gateway.Tests;

/// <summary>With a signing key, an MQTT client's password is its token, and the token's claims govern it.</summary>
[Collection(SecurityCollection.Name)]
public sealed class MqttSecurityTests(SecurityFixture fixture)
{
    private async Task<(IMqttClient Client, MqttClientConnectResult Result)> ConnectAsync(string? password, string userName = "whoever")
    {
        var uri = new Uri($"ws://{fixture.Gateway.BaseAddress.Authority}/mqtt");
        var options = new MqttClientOptionsBuilder()
            .WithWebSocketServer(o => o.WithUri(uri.ToString()))
            .WithClientId("sec-" + Guid.NewGuid().ToString("N"))
            .WithProtocolVersion(MqttProtocolVersion.V500)
            .WithCredentials(userName, password ?? string.Empty)
            .WithTimeout(TimeSpan.FromSeconds(10))
            .Build();
        var client = new MqttClientFactory().CreateMqttClient();
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        // MQTTnet 5 returns a refusing CONNACK as the result (it throws only when no CONNACK came).
        return (client, await client.ConnectAsync(options, cts.Token));
    }

    [Fact]
    public async Task MqttConnectWithoutAValidTokenIsRefused()
    {
        var (none, noneResult) = await ConnectAsync(null);
        using var _ = none;
        Assert.Equal(MqttClientConnectResultCode.BadUserNameOrPassword, noneResult.ResultCode);

        var (bad, badResult) = await ConnectAsync("not-a-token");
        using var __ = bad;
        Assert.Equal(MqttClientConnectResultCode.BadUserNameOrPassword, badResult.ResultCode);
    }

    [Fact]
    public async Task MqttTokenClaimsDecideWhatMayBeSubscribedAndTheUserIsTheTokensSub()
    {
        var user = SecurityFixture.NewUser();
        var token = fixture.Token(user, topics: ["mq:**"]);
        var (client, result) = await ConnectAsync(token, userName: "someone-else");
        using var _ = client;
        Assert.Equal(MqttClientConnectResultCode.Success, result.ResultCode);

        async Task<MqttClientSubscribeResultCode> SubscribeAsync(string topic)
        {
            using var cts = new CancellationTokenSource(WsClient.DefaultWait);
            var answer = await client.SubscribeAsync(new MqttClientSubscribeOptionsBuilder().WithTopicFilter(topic, MqttQualityOfServiceLevel.AtMostOnce).Build(), cts.Token);
            return answer.Items.Single().ResultCode;
        }

        Assert.Equal(MqttClientSubscribeResultCode.GrantedQoS0, await SubscribeAsync("mq:" + Guid.NewGuid().ToString("N")));
        Assert.Equal(MqttClientSubscribeResultCode.NotAuthorized, await SubscribeAsync("other:" + Guid.NewGuid().ToString("N")));
        // The user is the token's sub, not the MQTT user name: its own personal channel is allowed, the name's is not.
        Assert.Equal(MqttClientSubscribeResultCode.GrantedQoS0, await SubscribeAsync("user:" + user));
        Assert.Equal(MqttClientSubscribeResultCode.NotAuthorized, await SubscribeAsync("user:someone-else"));
    }
}
