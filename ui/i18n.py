"""Gradio's own interface strings in Chinese, for every browser language (the whole app is Chinese).

Why: Gradio translates its built-in strings ("Drop File Here", "Click to Upload", "Like", "Loading") by
the browser's language, so a browser set to English or German showed them in English or German.
Custom translations given to ``gr.I18n`` for a locale override the built-in ones (flat dotted keys, the
names Gradio uses), so these Chinese strings are registered for every locale Gradio ships. The keys
and most texts are Gradio 6's own zh-CN translation; the ones it lacks were added here.

A few strings are written into Gradio's components as plain text, outside its i18n (the table search
box's "Search..." placeholder, its title and copy button): ``HEAD`` replaces them in the page.
"""
from __future__ import annotations

import gradio as gr

# Every locale Gradio 6 ships a translation for (gradio/templates/frontend/assets/<locale>-*.js).
LOCALES = ("ar", "ca", "ckb", "de", "en", "es", "et", "eu", "fa", "fi", "fr", "he", "hi", "id", "ja", "ko", "lt", "nb",
           "nl", "pl", "pt-BR", "pt", "ro", "ru", "sv", "ta", "th", "tr", "uk", "ur", "uz", "zh-CN", "zh-TW")

ZH = {
    "3D_model.3d_model": "3D模型",
    "3D_model.drop_to_upload": "将 3D 模型（.obj、.glb、.stl、.gltf、.splat 或 .ply）文件拖放到此处以上传",
    "annotated_image.annotated_image": "标注图像",
    "audio.allow_recording_access": "请允许访问麦克风以进行录音。",
    "audio.audio": "音频",
    "audio.drop_to_upload": "将音频文件拖放到此处以上传",
    "audio.no_device_support": "无法访问媒体设备。请检查您是否在安全来源（https）或本地主机上运行（或者您已经通过 ssl_verify 传递了有效的 SSL 证书），并且您已经允许浏览器访问您的设备。",
    "audio.no_microphone": "找不到麦克风",
    "audio.pause": "暂停",
    "audio.play": "播放",
    "audio.record": "录制",
    "audio.record_from_microphone": "从麦克风录制",
    "audio.recording_error": "无法从麦克风开始录音。",
    "audio.resume": "继续",
    "audio.stop": "停止",
    "audio.stop_recording": "停止录制",
    "audio.waiting": "等待中",
    "blocks.connection_can_break": "在移动设备上，如果此标签页失去焦点或设备休眠，连接可能会中断，导致您在队列中失去位置。",
    "blocks.long_requests_queue": "有一个长时间的待处理请求队列。复制此 Space 以跳过队列。",
    "blocks.lost_connection": "由于离开页面，连接已丢失。正在重新加入队列...",
    "blocks.waiting_for_inputs": "等待文件上传完成，请稍后重试。",
    "chat_interface.additional_inputs": "其他输入",
    "chat_interface.chatbot": "对话",
    "chat_interface.conversation": "对话",
    "chat_interface.message_placeholder": "请输入消息……",
    "chat_interface.new_chat": "新对话",
    "chatbot.cancel": "取消",
    "chatbot.clear": "清空对话",
    "chatbot.complete": "完成",
    "chatbot.copied_message": "已复制",
    "chatbot.copy_message": "复制消息",
    "chatbot.dislike": "踩",
    "chatbot.edit": "编辑",
    "chatbot.like": "赞",
    "chatbot.retry": "重试",
    "chatbot.submit": "发送",
    "chatbot.undo": "撤销",
    "checkbox.checkbox": "复选框",
    "checkbox.checkbox_group": "复选框组",
    "code.code": "代码",
    "color_picker.color_picker": "颜色选择器",
    "common.back_to_app": "应用",
    "common.back_to_app_description": "返回应用",
    "common.built_with": "构建于",
    "common.built_with_gradio": "使用 Gradio 构建",
    "common.clear": "清除",
    "common.display_theme": "显示主题",
    "common.download": "下载",
    "common.download_all": "全部下载",
    "common.edit": "编辑",
    "common.empty": "空",
    "common.error": "错误",
    "common.hosted_on": "托管在",
    "common.language": "语言",
    "common.loading": "加载中",
    "common.logo": "标志",
    "common.no_devices": "未找到设备",
    "common.or": "或",
    "common.progress": "进度",
    "common.pwa": "渐进式 Web 应用",
    "common.record": "录制",
    "common.remove": "移除",
    "common.run": "运行",
    "common.runs": "运行记录",
    "common.runs_description": "查看保存在本浏览器中的运行记录",
    "common.settings": "设置",
    "common.share": "分享",
    "common.stop_recording": "停止录制",
    "common.submit": "提交",
    "common.undo": "撤销",
    "dataframe.add_column_left": "在左侧添加列",
    "dataframe.add_column_right": "在右侧添加列",
    "dataframe.add_row_above": "在上方添加行",
    "dataframe.add_row_below": "在下方添加行",
    "dataframe.clear_filter": "清除筛选",
    "dataframe.clear_sort": "清除排序",
    "dataframe.delete_column": "删除列",
    "dataframe.delete_row": "删除行",
    "dataframe.drop_to_upload": "将 CSV 或 TSV 文件拖放到此处以将数据导入数据框",
    "dataframe.filter": "筛选",
    "dataframe.import_empty_file": "拖入的文件是空的。",
    "dataframe.import_fixed_columns": "这个表格只能有 {expected} 列，文件有 {actual} 列。",
    "dataframe.import_fixed_rows": "这个表格只能有 {expected} 行，文件有 {actual} 行。",
    "dataframe.import_no_column_names": "拖入的文件没有列名。",
    "dataframe.import_ragged_row": "文件第 {line} 行有 {fields} 个字段，表头有 {columns} 个。",
    "dataframe.import_static_columns": "这个表格的列是只读的，不能导入。",
    "dataframe.incorrect_format": "格式不正确，仅支持 CSV 和 TSV 文件",
    "dataframe.new_column": "添加列",
    "dataframe.new_row": "新行",
    "dataframe.sort_ascending": "升序排序",
    "dataframe.sort_column": "排序列",
    "dataframe.sort_descending": "降序排序",
    "dropdown.dropdown": "下拉菜单",
    "errors.build_error": "存在构建错误",
    "errors.config_error": "存在配置错误",
    "errors.contact_page_author": "请联系页面的作者并告知他们。",
    "errors.no_app_file": "不存在应用文件",
    "errors.runtime_error": "存在运行时错误",
    "errors.space_not_working": "\"Space 无法工作，原因：\" {0}",
    "errors.space_paused": "Space 已暂停",
    "errors.use_via_api": "通过 API 使用",
    "errors.use_via_api_or_mcp": "通过 API 或 MCP 使用",
    "file.uploading": "正在上传...",
    "highlighted_text.highlighted_text": "高亮文本",
    "image.allow_webcam_access": "请允许访问网络摄像头以进行录制。",
    "image.brush_color": "画笔颜色",
    "image.brush_radius": "画笔大小",
    "image.drop_to_upload": "将图像文件拖放到此处以上传",
    "image.image": "图像",
    "image.remove_image": "移除图像",
    "image.select_brush_color": "选择画笔颜色",
    "image.start_drawing": "开始绘画",
    "image.use_brush": "使用画笔",
    "label.label": "标签",
    "login.enable_cookies": "如果您正在使用隐身模式访问 HuggingFace Space，您必须启用第三方 cookie。",
    "login.incorrect_credentials": "凭据不正确",
    "login.login": "登录",
    "login.password": "密码",
    "login.username": "用户名",
    "number.number": "数字",
    "plot.plot": "图表",
    "radio.radio": "单选框",
    "slider.slider": "滑块",
    "status.queue_position": "排队中：第 {position} 位，共 {size} 位",
    "upload_text.click_to_upload": "点击上传",
    "upload_text.drop_audio": "将音频拖放到此处",
    "upload_text.drop_csv": "将 CSV 文件拖放到此处",
    "upload_text.drop_file": "将文件拖放到此处",
    "upload_text.drop_gallery": "在此处放置媒体文件",
    "upload_text.drop_image": "将图像拖放到此处",
    "upload_text.drop_video": "将视频拖放到此处",
    "upload_text.paste_clipboard": "从剪贴板粘贴",
    "video.drop_to_upload": "将视频文件拖放到此处以上传",
}

# Plain-text English inside Gradio's components (not i18n keys): replaced in the page as it renders.
HARDCODED = {
    "Search...": "搜索…",
    "Filter...": "筛选…",
    "Enter text to search the table": "输入文字以搜索表格",
    "Enter text to filter the table": "输入文字以筛选表格",
    "Copy table data": "复制表格数据",
    "Copied to clipboard": "已复制到剪贴板",
    "Click to upload or drop files": "点击上传或拖放文件",
    "File upload": "上传文件",
    "Table actions": "表格操作",
    "Open cell menu": "打开单元格菜单",
    "Fullscreen": "全屏",
    "Exit fullscreen mode": "退出全屏",
    "Reset to default value": "恢复默认值",
    "More tabs": "更多标签页",
    "chatbot conversation": "对话",
    "Vega visualization": "图表",
    "Download": "下载",
    "Clear": "清除",
    "Copy": "复制",
}
# Attributes that start with these words and go on with the component's (Chinese) label.
PREFIXES = {"number input for ": "数值输入：", "range slider for ": "滑块："}

HEAD = """
<script>
(function () {
  var zh = %s;
  var prefixes = %s;
  var attrs = ["placeholder", "title", "aria-label"];
  function fix(root) {
    if (!root || !root.querySelectorAll) return;
    var els = root.querySelectorAll("input[placeholder], [title], [aria-label]");
    for (var i = 0; i < els.length; i++) {
      for (var j = 0; j < attrs.length; j++) {
        var v = els[i].getAttribute(attrs[j]);
        if (!v) continue;
        if (Object.prototype.hasOwnProperty.call(zh, v)) { els[i].setAttribute(attrs[j], zh[v]); continue; }
        for (var p in prefixes) {
          if (v.indexOf(p) === 0) { els[i].setAttribute(attrs[j], prefixes[p] + v.slice(p.length)); break; }
        }
      }
    }
  }
  var pending = false;
  new MutationObserver(function () {
    if (pending) return;
    pending = true;
    requestAnimationFrame(function () { pending = false; fix(document.body); });
  }).observe(document.documentElement, {subtree: true, childList: true, attributes: true,
                                         attributeFilter: attrs});
  document.addEventListener("DOMContentLoaded", function () { fix(document.body); });
})();
</script>
"""


def translations() -> gr.I18n:
    """Gradio's built-in strings in Chinese for every locale (pass as ``i18n=`` when mounting the app)."""
    return gr.I18n(**{locale: dict(ZH) for locale in LOCALES})


def head() -> str:
    import json

    return HEAD % (json.dumps(HARDCODED, ensure_ascii=False), json.dumps(PREFIXES, ensure_ascii=False))
